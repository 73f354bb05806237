//! Unit tests of the module above.

use super::*;

#[test]
fn refuses_what_python_would_run() {
    // pickle.dumps of os.system('true') via __reduce__ (protocol 4).
    let evil = b"\x80\x04\x95\x1e\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94.";
    let err = load(evil).unwrap_err();
    assert!(err.contains("posix.system"), "{err}");
    let err = load(b"cos\nsystem\n(S'true'\ntR.").unwrap_err();
    assert!(err.contains("os.system"), "{err}");
}

#[test]
fn written_values_read_back() {
    let v = Value::Dict(Rc::new(vec![(
        Value::Str(Rc::from("a")),
        Value::Tuple(Rc::from([Value::Int(-3), Value::Bool(true), Value::None])),
    )]));
    let mut w = Writer::new();
    w.value(&v);
    assert_eq!(load(&w.finish()).unwrap(), v);
}

#[test]
fn lengths_past_the_end_are_errors() {
    assert!(load(b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f").is_err());
    assert!(load(b"\x80\x04X\xff\xff\xff\xffab").is_err());
    assert!(load(b"\x80\x04(((((((((((((((").is_err());
}
