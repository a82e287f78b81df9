# ruff: noqa

import json, socket, http.client


def dropped(url, body, headers=None, path="/v1/chat/completions"):
    host, port = url.split("//")[1].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.request(
        "POST",
        path,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    r = c.getresponse()
    sid = r.getheader("X-Session-ID")
    r.read1(64)
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    return sid
