# ruff: noqa
import os, sys, time

sys.path.insert(0, "/work/main")
os.chdir("/work/main")
import tests.real_vllm.real_vllm as rv

rv._free_port = lambda: 27900
with rv.running_vllm(
    ["--served-model-name", "saga-sim", "--enable-auto-tool-choice", "--tool-call-parser", "hermes"],
    name="rev54b",
) as url:
    open("/tmp/rev54b/vllm_url", "w").write(url)
    while not os.path.exists("/tmp/rev54b/vllm_stop"):
        time.sleep(0.5)
print("stopped")
