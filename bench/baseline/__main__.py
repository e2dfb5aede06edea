"""`python -m bench.baseline --port P`: serve the baseline with uvicorn, one process, as ours."""

from __future__ import annotations

import argparse

import uvicorn

from bench.baseline.app import create_app
from bench.baseline.settings import BaselineSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    app = create_app(BaselineSettings.from_env())
    # The server settings of `splitstone serve`: no access log from uvicorn, uvicorn's default loop and
    # HTTP parser (uvloop and httptools when installed), one process.
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False, proxy_headers=True)


if __name__ == "__main__":
    main()
