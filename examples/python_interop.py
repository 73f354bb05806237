"""Calls the Rust example `python_interop` from a Python ProxyStore program.

The array goes into a ProxyStore file store; only its proxy (a pickle of a
few hundred bytes) goes to the Rust program, on stdin. The Rust program
answers with the pickle of an owned proxy of its result, which resolves
here from the same store.

Run from the repository root: python3 examples/python_interop.py
(needs `pip install proxystore==1.1.0 numpy`). Set PYTHON_INTEROP_CMD to
the command that runs the built example to skip `cargo run`.
"""
import os
import pickle
import shlex
import subprocess
import tempfile

import numpy as np
from proxystore.connectors.file import FileConnector
from proxystore.store import Store
from proxystore.store.utils import get_key


def run_rust(proxy):
    """What a Parsl `bash_app`/`python_app` or a Globus Compute function
    would do on the worker: run the Rust program with the proxy on stdin."""
    cmd = os.environ.get('PYTHON_INTEROP_CMD')
    cmd = shlex.split(cmd) if cmd else [
        'cargo', 'run', '--quiet', '--example', 'python_interop',
    ]
    done = subprocess.run(
        cmd, input=pickle.dumps(proxy), stdout=subprocess.PIPE, check=True,
    )
    return pickle.loads(done.stdout)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = os.path.join(tmp, 'store')
        with Store('python-interop', FileConnector(store_dir), register=True) as store:
            samples = np.random.default_rng(7).normal(5.0, 3.0, 1_000_000)
            proxy = store.proxy(samples)
            result = run_rust(proxy)
            standardized = np.asarray(result)
            expected = (samples - samples.mean()) / samples.std()
            assert np.allclose(standardized, expected), 'wrong result'
            print(f'rust standardized {len(standardized)} samples: '
                  f'mean {standardized.mean():.2e}, std {standardized.std():.6f}')
            del result, standardized  # the owned result evicts itself
            store.evict(get_key(proxy))
            left = [n for n in os.listdir(store_dir)]
            assert left == [], f'left behind: {left}'
            print('nothing left behind in the store')


if __name__ == '__main__':
    main()
