"""The Python ProxyStore + Dask caller of bench/peer-hosts.

Runs on the caller's host: a Dask client of the scheduler given, behind
ProxyStore 1.1's StoreExecutor with a RedisConnector store (every argument
and result proxied), echoes a bytes object of --mib MiB once to warm up,
then --reps times, printing `TIME <seconds>` for each (submit, result,
resolve the result proxy; the objects are evicted afterwards, untimed).

Usage: python peer_hosts_dask.py SCHEDULER REDIS_HOST REDIS_PORT --mib N --reps N
"""

import argparse
import time

from dask.distributed import Client
from proxystore.connectors.redis import RedisConnector
from proxystore.store import Store
from proxystore.store.executor import ProxyAlways, StoreExecutor
from proxystore.store.utils import get_key


def echo(data):
    # Resolves the proxy: the worker reads the bytes, and returns them to
    # be proxied as the result.
    return data[:]


class Impure:
    """Dask's client as an executor whose submits are never cached."""

    def __init__(self, client):
        self.client = client

    def submit(self, fn, *args, **kwargs):
        return self.client.submit(fn, *args, pure=False, **kwargs)

    def map(self, fn, *iterables, **kwargs):
        return self.client.map(fn, *iterables, pure=False, **kwargs)

    def shutdown(self, wait=True, cancel_futures=False):
        self.client.close()

    def close(self):
        self.client.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument('scheduler')
    p.add_argument('redis_host')
    p.add_argument('redis_port', type=int)
    p.add_argument('--mib', type=int, default=100)
    p.add_argument('--reps', type=int, default=3)
    args = p.parse_args()
    store = Store(
        'peer-bench-dask',
        RedisConnector(args.redis_host, args.redis_port),
        register=True,
    )
    # ProxyStore's docs: ownership is not compatible with Dask's client.
    ex = StoreExecutor(
        Impure(Client(args.scheduler)),
        store,
        should_proxy=ProxyAlways(),
        ownership=False,
        close_store=False,
    )
    data = bytes(range(251)) * (args.mib * 1024 * 1024 // 251)
    data += bytes(args.mib * 1024 * 1024 - len(data))

    def once():
        t0 = time.perf_counter()
        r = ex.submit(echo, data).result()
        n = len(r)  # resolves the result proxy
        took = time.perf_counter() - t0
        assert n == len(data)
        store.evict(get_key(r))
        return took

    once()
    for _ in range(args.reps):
        print(f'TIME {once()}', flush=True)
    ex.shutdown()
    store.close()


if __name__ == '__main__':
    main()
