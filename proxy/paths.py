"""Route prefixes more than one module tells apart (a module of constants: no imports, so any may use it)."""

ADMIN_PREFIX = "/saga/v1/"  # the admin API (proxy/auth.py: its token; proxy/cors.py: never open to pages)
