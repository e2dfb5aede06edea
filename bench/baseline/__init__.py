"""The floor of the API benchmark: the benchmarked endpoints as a bare Starlette app on asyncpg.

It does what splitstone does per request, by hand: verifies the same access token, checks the same
membership, runs the same queries (reads outside any transaction, the create in one) and answers the
same JSON. `python -m bench.baseline --port P` serves it with the environment of `splitstone serve`.
"""
