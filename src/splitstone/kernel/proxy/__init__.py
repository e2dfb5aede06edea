"""The reverse proxy in front of a split topology: clients see one base URL, each path goes to its service.

- `routes`: which public paths each module serves, read from the modules' own routers (never by hand).
- `nginx`: a self-contained nginx.conf generated from the topology and those routes.
- `builtin`: a small ASGI proxy with the same routing and the same problems, for machines without nginx.

Both answer the same way at the seams: `/healthz` by the proxy itself, `/readyz` ready only when every
service is, `/internal/...` never (404), an unknown path 404, a service that does not answer 503, all
as `application/problem+json`; a service's own responses (its problems included) pass through untouched.
"""
