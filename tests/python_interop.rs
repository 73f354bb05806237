//! Objects and proxies shared with the real Python ProxyStore 1.1.0, both
//! ways, on the file store and on Redis (see `support/python.rs` for how
//! the interpreter is found or made; without Python these tests skip).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proxystore::python::{self, NdArray, Order, PickledProxy, ProxyKind, PythonFileConnector};
use proxystore::{Error, Proxy, Store};
use support::common::{hex, unhex, unique};
use support::python::{python_or_skip, run};
use support::redis_server::RedisServer;

macro_rules! python {
    ($test:expr) => {
        match python_or_skip($test) {
            Some(python) => python,
            None => return,
        }
    };
}

/// Opens Python's side of a store: `kind` is `file` (`where` a directory)
/// or `redis` (`where` a port).
const PY_STORE: &str = r#"
import sys, json, pickle, time, os
import numpy as np
from proxystore.store import Store
from proxystore.connectors.file import FileConnector
from proxystore.connectors.redis import RedisConnector
kind, where = sys.argv[1], sys.argv[2]
def connector():
    if kind == 'file':
        return FileConnector(where, clear=False)
    return RedisConnector('127.0.0.1', int(where))
DTYPES = ['?', 'u1', 'i1', 'u2', 'i2', 'u4', 'i4', 'u8', 'i8', 'f4', 'f8']
def typed(dt, order='<'):
    if dt == '?':
        return np.arange(7) % 2 == 1
    return np.arange(7).astype(np.dtype(dt).newbyteorder(order) if dt not in ('u1', 'i1') else dt)
"#;

/// Python stores objects of every supported kind and pickles proxies of
/// them to `argv[3]` as JSON of hex strings.
const PY_PUT: &str = r#"
store = Store('py-side-' + kind, connector(), register=True)
proxies = {}
objs = {
    'str': 'grüße from python',
    'empty': np.zeros(0, dtype='<f8'),
    'fortran': np.asfortranarray(np.arange(6, dtype='<i4').reshape(2, 3)),
    'big_f8': typed('f8', '>'),
    'big_i2': typed('i2', '>'),
    'big_u4': typed('u4', '>'),
    'pickled': {'a': 1},
}
for dt in DTYPES:
    objs['dt_' + dt] = typed(dt)
for name, obj in objs.items():
    proxies[name] = store.proxy(obj)
proxies['bytes_owned'] = store.owned_proxy(b'\x00\x01 bytes \xff')
with open(sys.argv[3], 'w') as f:
    json.dump({n: pickle.dumps(p).hex() for n, p in proxies.items()}, f)
"#;

/// Python loads the pickles of `argv[3]` and checks each against what the
/// Rust side was asked to store.
const PY_CHECK: &str = r#"
with open(sys.argv[3]) as f:
    pickles = {n: bytes.fromhex(h) for n, h in json.load(f).items()}
expected = {
    'bytes': b'\x00rust \xff',
    'str': 'grüße from rust',
    'empty': np.zeros(0, dtype='<f8'),
    'fortran': np.asfortranarray(np.arange(6, dtype='<i4').reshape(2, 3)),
}
for dt in DTYPES:
    expected['dt_' + dt] = typed(dt)
for name, want in expected.items():
    got = pickle.loads(pickles[name])
    if isinstance(want, np.ndarray):
        got = np.asarray(got)
        assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
        assert got.shape == want.shape and np.array_equal(got, want), (name, got, want)
        if name == 'fortran':
            assert got.flags.f_contiguous and not got.flags.c_contiguous, got.flags
    else:
        assert type(got) is type(want) or got == want, (name, type(got))
        assert got == want, (name, got, want)
    print(name, 'ok')
owned = pickle.loads(pickles['owned'])
assert type(owned).__name__ == 'OwnedProxy', type(owned)
assert owned == b'owned by python now'
print('owned', 'ok')
del owned   # python's owner evicts the object
"#;

fn pickles(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let text = std::fs::read_to_string(path).unwrap();
    let map: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
    map.into_iter().map(|(k, v)| (k, unhex(&v))).collect()
}

fn proxy<T: proxystore::Storable>(pickles: &BTreeMap<String, Vec<u8>>, name: &str) -> Proxy<T> {
    PickledProxy::from_pickle(&pickles[name])
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .into_proxy()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn sequence<T: Copy>(f: impl Fn(u8) -> T) -> Vec<T> {
    (0u8..7).map(f).collect()
}

/// Reads what Python stored, checks it, evicts it; returns the keys.
fn read_python_objects(pickles: &BTreeMap<String, Vec<u8>>) -> Vec<proxystore::Key> {
    assert_eq!(*proxy::<String>(pickles, "str"), "grüße from python");
    assert!(proxy::<Vec<f64>>(pickles, "empty").is_empty());
    let fortran = proxy::<NdArray<i32>>(pickles, "fortran");
    assert_eq!(fortran.shape(), [2, 3]);
    assert_eq!(fortran.order(), Order::Fortran);
    for (i, row) in [[0, 1, 2], [3, 4, 5]].iter().enumerate() {
        for (j, want) in row.iter().enumerate() {
            assert_eq!(fortran.get(&[i, j]), Some(want), "[{i}, {j}]");
        }
    }
    assert_eq!(*proxy::<Vec<f64>>(pickles, "big_f8"), sequence(f64::from));
    assert_eq!(*proxy::<Vec<i16>>(pickles, "big_i2"), sequence(i16::from));
    assert_eq!(*proxy::<Vec<u32>>(pickles, "big_u4"), sequence(u32::from));
    assert_eq!(
        *proxy::<Vec<bool>>(pickles, "dt_?"),
        sequence(|i| i % 2 == 1)
    );
    assert_eq!(*proxy::<Vec<u8>>(pickles, "dt_u1"), sequence(|i| i));
    assert_eq!(*proxy::<Vec<i8>>(pickles, "dt_i1"), sequence(|i| i as i8));
    assert_eq!(*proxy::<Vec<u16>>(pickles, "dt_u2"), sequence(u16::from));
    assert_eq!(*proxy::<Vec<i16>>(pickles, "dt_i2"), sequence(i16::from));
    assert_eq!(*proxy::<Vec<u32>>(pickles, "dt_u4"), sequence(u32::from));
    assert_eq!(*proxy::<Vec<i32>>(pickles, "dt_i4"), sequence(i32::from));
    assert_eq!(*proxy::<Vec<u64>>(pickles, "dt_u8"), sequence(u64::from));
    assert_eq!(*proxy::<Vec<i64>>(pickles, "dt_i8"), sequence(i64::from));
    assert_eq!(*proxy::<Vec<f32>>(pickles, "dt_f4"), sequence(f32::from));
    assert_eq!(*proxy::<Vec<f64>>(pickles, "dt_f8"), sequence(f64::from));

    // Asking for another element type is an error, not a reinterpretation.
    let wrong = proxy::<Vec<f32>>(pickles, "dt_f8");
    let err = Proxy::resolve(&wrong).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");

    // A pickled python object is refused, with what to store instead.
    let pickled = proxy::<String>(pickles, "pickled");
    let err = Proxy::resolve(&pickled).unwrap_err().to_string();
    assert!(
        err.contains("(`PK`)") && err.contains("numpy array"),
        "{err}"
    );

    // Python's owned proxy: ownership comes here, and the object goes
    // when the owner is dropped.
    let owned = PickledProxy::from_pickle(&pickles["bytes_owned"]).unwrap();
    assert_eq!(owned.kind(), ProxyKind::Owned);
    assert!(owned.clone().into_proxy::<Vec<u8>>().is_err());
    let owned = owned.into_owned::<Vec<u8>>().unwrap();
    assert_eq!(*owned, b"\x00\x01 bytes \xff");
    let owned_key = proxystore::OwnedProxy::key(&owned);
    let store = proxystore::OwnedProxy::factory(&owned).store().unwrap();
    drop(owned);
    assert!(!store.exists(&owned_key).unwrap());

    // The plain proxies' objects stay until someone evicts them: this test.
    let mut keys = Vec::new();
    for (name, bytes) in pickles {
        if name != "bytes_owned" {
            let p = PickledProxy::from_pickle(bytes).unwrap();
            assert_eq!(p.kind(), ProxyKind::Plain);
            assert!(store.exists(&p.key()).unwrap(), "{name}");
            store.evict(&p.key()).unwrap();
            keys.push(p.key());
        }
    }
    store.close().unwrap();
    keys
}

/// Stores what `PY_CHECK` expects, in Python's format, and writes the
/// pickles of their proxies to `path`.
fn write_rust_objects(store: &Store, path: &Path) {
    let mut out = BTreeMap::new();
    let mut add = |name: &str, pickle: Vec<u8>| {
        out.insert(name.to_string(), hex(&pickle));
    };
    let p = python::proxy(store, b"\x00rust \xff".to_vec()).unwrap();
    add("bytes", python::to_pickle(&p).unwrap());
    let p = python::proxy(store, "grüße from rust".to_string()).unwrap();
    add("str", python::to_pickle(&p).unwrap());
    let p = python::proxy(store, Vec::<f64>::new()).unwrap();
    add("empty", python::to_pickle(&p).unwrap());
    let fortran = NdArray::new(vec![2, 3], Order::Fortran, vec![0i32, 3, 1, 4, 2, 5]).unwrap();
    let p = python::proxy(store, fortran).unwrap();
    add("fortran", python::to_pickle(&p).unwrap());
    macro_rules! typed {
        ($($name:literal => $make:expr),*) => {$(
            let p = python::proxy(store, $make).unwrap();
            add($name, python::to_pickle(&p).unwrap());
        )*};
    }
    typed!(
        "dt_?" => sequence(|i| i % 2 == 1),
        // Vec<u8> is python bytes: a uint8 array is an NdArray.
        "dt_u1" => NdArray::new(vec![7], Order::C, sequence(|i| i)).unwrap(),
        "dt_i1" => sequence(|i| i as i8),
        "dt_u2" => sequence(u16::from),
        "dt_i2" => sequence(i16::from),
        "dt_u4" => sequence(u32::from),
        "dt_i4" => sequence(i32::from),
        "dt_u8" => sequence(u64::from),
        "dt_i8" => sequence(i64::from),
        "dt_f4" => sequence(f32::from),
        "dt_f8" => sequence(f64::from)
    );
    let owned = python::owned_proxy(store, b"owned by python now".to_vec()).unwrap();
    add("owned", python::owned_to_pickle(owned).unwrap());
    std::fs::write(path, serde_json::to_string(&out).unwrap()).unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn python_objects_and_proxies_resolve_in_rust_on_the_file_store() {
    let python = python!("python_objects_and_proxies_resolve_in_rust_on_the_file_store");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let out = tmp.path().join("pickles.json");
    let script = format!("{PY_STORE}{PY_PUT}");
    run(
        &python,
        &script,
        &["file", dir.to_str().unwrap(), out.to_str().unwrap()],
    );
    // Python's layout: every object with its marker.
    assert!(entries(&dir).iter().any(|n| n.ends_with(".ready")));
    read_python_objects(&pickles(&out));
    assert_eq!(entries(&dir), Vec::<String>::new(), "left behind");
}

#[test]
fn rust_objects_and_proxies_resolve_in_python_on_the_file_store() {
    let python = python!("rust_objects_and_proxies_resolve_in_python_on_the_file_store");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let out = tmp.path().join("pickles.json");
    let store = Store::new(unique("rust-file"), PythonFileConnector::new(&dir).unwrap()).unwrap();
    write_rust_objects(&store, &out);
    let script = format!("{PY_STORE}{PY_CHECK}");
    let printed = run(
        &python,
        &script,
        &["file", dir.to_str().unwrap(), out.to_str().unwrap()],
    );
    assert_eq!(
        printed.lines().filter(|l| l.ends_with(" ok")).count(),
        16,
        "{printed}"
    );
    // Python's owner evicted its object; closing removes the rest, which
    // this side created.
    assert_eq!(entries(&dir).len(), 2 * 15, "{:?}", entries(&dir));
    store.close().unwrap();
    assert_eq!(entries(&dir), Vec::<String>::new(), "left behind");
}

fn dbsize(server: &RedisServer) -> u64 {
    server
        .raw(&["DBSIZE"])
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap()
}

#[test]
fn both_ways_on_redis_with_bare_keys() {
    let python = python!("both_ways_on_redis_with_bare_keys");
    let Some(server) = RedisServer::start("both_ways_on_redis_with_bare_keys") else {
        return;
    };
    let port = server.port().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pickles.json");

    run(
        &python,
        &format!("{PY_STORE}{PY_PUT}"),
        &["redis", &port, out.to_str().unwrap()],
    );
    let keys = read_python_objects(&pickles(&out));
    // Python's layout: the bare uuid is the Redis key.
    assert!(!keys.is_empty());
    assert_eq!(dbsize(&server), 0, "left behind");

    let store = Store::new(
        unique("rust-redis"),
        python::PythonRedisConnector::new("127.0.0.1", server.port()).unwrap(),
    )
    .unwrap();
    write_rust_objects(&store, &out);
    let key = PickledProxy::from_pickle(&pickles(&out)["str"])
        .unwrap()
        .key();
    assert_eq!(server.raw(&["EXISTS", &key.to_string()]).trim(), ":1");
    let printed = run(
        &python,
        &format!("{PY_STORE}{PY_CHECK}"),
        &["redis", &port, out.to_str().unwrap()],
    );
    assert_eq!(
        printed.lines().filter(|l| l.ends_with(" ok")).count(),
        16,
        "{printed}"
    );
    assert_eq!(dbsize(&server), 15);
    store.close().unwrap();
    assert_eq!(dbsize(&server), 0, "left behind");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Python makes a future, hands its proxy over, and sets it only when the
/// Rust reader is already waiting.
#[test]
fn a_python_future_set_after_the_rust_reader_started_waiting() {
    let python = python!("a_python_future_set_after_the_rust_reader_started_waiting");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let handoff = tmp.path().join("future.hex");
    let go = tmp.path().join("go");
    let script = format!(
        "{PY_STORE}{}",
        r#"
store = Store('py-future', connector(), register=True)
fut = store.future(polling_timeout=120)
with open(sys.argv[3] + '.tmp', 'w') as f:
    f.write(pickle.dumps(fut.proxy()).hex())
os.rename(sys.argv[3] + '.tmp', sys.argv[3])
deadline = time.monotonic() + 120
while not os.path.exists(sys.argv[4]):
    assert time.monotonic() < deadline, 'never told to set the future'
    time.sleep(0.01)
fut.set_result(np.arange(5, dtype='<i8'))
"#
    );
    let mut cmd = std::process::Command::new(&python);
    cmd.arg("-c")
        .arg(&script)
        .args([
            "file",
            dir.to_str().unwrap(),
            handoff.to_str().unwrap(),
            go.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null());
    support::redis_server::die_with_parent(&mut cmd);
    // A failing assertion below must not leave python waiting.
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !handoff.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "python never handed the future over"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pickled =
        PickledProxy::from_pickle(&unhex(&std::fs::read_to_string(&handoff).unwrap())).unwrap();
    assert!(pickled.is_future());
    let key = pickled.key();
    let proxy: Proxy<Vec<i64>> = pickled.into_proxy().unwrap();
    let store = Proxy::factory(&proxy).store().unwrap();
    assert!(!store.exists(&key).unwrap(), "not set yet");
    let reader = std::thread::spawn(move || Proxy::resolve(&proxy).cloned());
    // The reader has been waiting for a while when python sets the value.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !reader.is_finished(),
        "the reader did not wait for the future"
    );
    std::fs::write(&go, b"").unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), [0, 1, 2, 3, 4]);
    assert!(child.0.wait().unwrap().success());
    store.evict(&key).unwrap();
    store.close().unwrap();
    assert_eq!(entries(&dir), Vec::<String>::new(), "left behind");
}

/// A pickle that would run `os.system` (and one that would build another
/// class) is refused, and nothing in it runs.
#[test]
fn a_hostile_pickle_is_refused_without_running_anything() {
    let python = python!("a_hostile_pickle_is_refused_without_running_anything");
    let tmp = tempfile::tempdir().unwrap();
    let witness = tmp.path().join("ran");
    let script = r#"
import os, pickle, sys, subprocess
class Evil:
    def __reduce__(self):
        return (os.system, ('touch ' + sys.argv[1],))
class Sneaky:
    def __reduce__(self):
        return (subprocess.call, (['touch', sys.argv[1]],))
print(pickle.dumps(Evil()).hex())
print(pickle.dumps(Sneaky(), protocol=2).hex())
"#;
    let printed = run(&python, script, &[witness.to_str().unwrap()]);
    for line in printed.lines() {
        let err = PickledProxy::from_pickle(&unhex(line)).unwrap_err();
        assert!(matches!(err, Error::Python { .. }), "{err}");
        assert!(err.to_string().contains("not one of ProxyStore's"), "{err}");
    }
    assert!(!witness.exists(), "something ran");
}

/// 100 MiB arrays both ways, read into their typed buffers.
#[test]
fn large_arrays_both_ways() {
    let python = python!("large_arrays_both_ways");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let out = tmp.path().join("pickle.hex");
    const N: usize = 100 << 17; // 100 MiB of f64
    let script = format!(
        "{PY_STORE}{}",
        r#"
store = Store('py-large', connector(), register=True)
if sys.argv[3] == 'put':
    p = store.proxy(np.arange(13107200, dtype='<f8'))
    with open(sys.argv[4], 'w') as f:
        f.write(pickle.dumps(p).hex())
else:
    with open(sys.argv[4]) as f:
        got = pickle.loads(bytes.fromhex(f.read()))
    a = np.asarray(got)
    assert a.dtype == np.float64 and a.shape == (13107200,), (a.dtype, a.shape)
    assert np.array_equal(a, np.arange(13107200, dtype='<f8') * 0.5)
    print('ok')
"#
    );
    run(
        &python,
        &script,
        &["file", dir.to_str().unwrap(), "put", out.to_str().unwrap()],
    );
    let pickled =
        PickledProxy::from_pickle(&unhex(&std::fs::read_to_string(&out).unwrap())).unwrap();
    let key = pickled.key();
    let proxy: Proxy<Vec<f64>> = pickled.into_proxy().unwrap();
    assert_eq!(proxy.len(), N);
    assert!(proxy.iter().enumerate().all(|(i, &x)| x == i as f64));
    let py_store = Proxy::factory(&proxy).store().unwrap();
    drop(proxy);
    py_store.evict(&key).unwrap();
    py_store.close().unwrap();

    let store = Store::new(
        unique("rust-large"),
        PythonFileConnector::new(&dir).unwrap(),
    )
    .unwrap();
    let values: Vec<f64> = (0..N).map(|i| i as f64 * 0.5).collect();
    let p = python::proxy(&store, values).unwrap();
    std::fs::write(&out, hex(&python::to_pickle(&p).unwrap())).unwrap();
    drop(p);
    let printed = run(
        &python,
        &script,
        &["file", dir.to_str().unwrap(), "get", out.to_str().unwrap()],
    );
    assert_eq!(printed.trim(), "ok");
    store.close().unwrap();
    assert_eq!(entries(&dir), Vec::<String>::new(), "left behind");
}

/// The pickle-free form: Python's configuration JSON and the key as text.
#[test]
fn config_json_and_key_both_ways() {
    let python = python!("config_json_and_key_both_ways");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let script = format!(
        "{PY_STORE}{}",
        r#"
from proxystore.store.config import StoreConfig
from proxystore.connectors.file import FileKey
if sys.argv[3] == 'put':
    store = Store('py-json', connector(), register=True)
    key = store.put('from python by key')
    print(store.config().model_dump_json())
    print(key.filename)
else:
    config = StoreConfig.model_validate_json(sys.argv[4])
    store = Store.from_config(config)
    got = store.get(FileKey(sys.argv[5]))
    assert got.dtype == np.float64 and list(got) == [1.5, 2.5], got
    print('ok')
"#
    );
    let printed = run(&python, &script, &["file", dir.to_str().unwrap(), "put"]);
    let mut lines = printed.lines();
    let (json, key) = (lines.next().unwrap(), lines.next().unwrap());
    let proxy: Proxy<String> = python::proxy_from_json(json, key).unwrap();
    assert_eq!(*proxy, "from python by key");
    let py_store = python::store_from_json(json).unwrap();
    py_store.evict(&Proxy::key(&proxy)).unwrap();
    py_store.close().unwrap();

    let store = Store::new(unique("rust-json"), PythonFileConnector::new(&dir).unwrap()).unwrap();
    let key = python::put(&store, &vec![1.5f64, 2.5]).unwrap();
    let json = python::config_json(&store).unwrap();
    let printed = run(
        &python,
        &script,
        &[
            "file",
            dir.to_str().unwrap(),
            "get",
            &json,
            &key.to_string(),
        ],
    );
    assert_eq!(printed.trim(), "ok");
    store.close().unwrap();
    assert_eq!(entries(&dir), Vec::<String>::new(), "left behind");
}

/// The example runs end to end from its documented command.
#[test]
fn the_example_runs_from_python() {
    let python = python!("the_example_runs_from_python");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(root.join("examples/python_interop.py"))
        .current_dir(root);
    // A build of the example beside this test's: no second cargo run.
    let built = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples/python_interop"));
    if let Some(built) = built.filter(|b| b.exists()) {
        cmd.env("PYTHON_INTEROP_CMD", built);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("nothing left behind"), "{stdout}");
}

/// Python's layout without Python: close removes only this side's objects,
/// and an entry that is a link out of the directory is refused, not read.
#[test]
fn the_python_file_layout_keeps_foreign_objects_and_refuses_links() {
    use proxystore::connectors::Connector;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let connector = PythonFileConnector::new(&dir).unwrap();
    // An object a Python program stored, and one that is not ready yet.
    let foreign = proxystore::Key::new();
    std::fs::write(dir.join(foreign.to_string()), b"US\nfrom python").unwrap();
    assert!(!connector.exists(&foreign).unwrap(), "no marker yet");
    assert_eq!(connector.get(&foreign).unwrap(), None);
    std::fs::write(dir.join(format!("{foreign}.ready")), b"").unwrap();
    assert_eq!(
        connector.get(&foreign).unwrap().unwrap(),
        b"US\nfrom python"
    );

    let outside = tmp.path().join("secret");
    std::fs::write(&outside, b"BS\nsecret").unwrap();
    let linked = proxystore::Key::new();
    std::os::unix::fs::symlink(&outside, dir.join(linked.to_string())).unwrap();
    std::fs::write(dir.join(format!("{linked}.ready")), b"").unwrap();
    let err = connector.get(&linked).unwrap_err();
    assert!(matches!(err, Error::NotAnObject { .. }), "{err}");

    let ours = connector.put(&[b"BS\n", b"from rust"]).unwrap();
    connector.close().unwrap();
    assert!(!connector.exists(&ours).unwrap());
    assert!(
        connector.exists(&foreign).unwrap(),
        "a python object was removed"
    );
    assert!(outside.exists());
}
