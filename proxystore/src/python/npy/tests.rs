//! Unit tests of the module above.

use super::*;

#[test]
fn header_round_trips_and_aligns() {
    let h = write_header(Dtype::F64, Order::Fortran, &[2, 3], 3);
    assert_eq!((h.len() + 3) % 64, 0);
    let (parsed, taken) = read_header(&mut &h[..], Some(h.len() as u64)).unwrap();
    assert_eq!(taken, h.len() as u64);
    assert_eq!(parsed.shape, [2, 3]);
    assert_eq!(parsed.order, Order::Fortran);
    assert_eq!(parsed.dtype, Dtype::F64);
}

#[test]
fn parses_what_numpy_writes() {
    for (text, shape) in [
        (
            "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }",
            vec![3],
        ),
        (
            "{'descr': '>u2', 'fortran_order': True, 'shape': (), }",
            vec![],
        ),
        (
            "{'descr': '|b1', 'fortran_order': False, 'shape': (0, 4), }",
            vec![0, 4],
        ),
    ] {
        assert_eq!(parse_dict(text).unwrap().shape, shape, "{text}");
    }
}

#[test]
fn refuses_hostile_headers() {
    for text in [
        "{'descr': '<O', 'fortran_order': False, 'shape': (3,), }",
        "{'descr': '<f8', 'fortran_order': __import__('os'), 'shape': (3,), }",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999, 99999999999), }",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }",
        "{'descr': '<f8', 'shape': (1,), }",
        "{'descr': '<f8\\', 'fortran_order': False, 'shape': (1,), }",
    ] {
        assert!(parse_dict(text).is_err(), "{text}");
    }
}

#[test]
fn a_lying_shape_allocates_nothing() {
    let h = write_header(Dtype::U8, Order::C, &[usize::MAX / 2], 0);
    let (header, _) = read_header(&mut &h[..], None).unwrap();
    let err = read_body::<u8>(&header, &mut &[1u8, 2][..], None).unwrap_err();
    assert!(err.contains("truncated"), "{err}");
    let err = read_body::<u8>(&header, &mut &[1u8, 2][..], Some(2)).unwrap_err();
    assert!(err.contains("needs"), "{err}");
}

#[test]
fn bool_bytes_are_checked() {
    let h = Header {
        dtype: Dtype::Bool,
        big_endian: false,
        order: Order::C,
        shape: vec![3],
    };
    assert_eq!(
        read_body::<bool>(&h, &mut &[1u8, 0, 1][..], Some(3)).unwrap(),
        [true, false, true]
    );
    assert!(read_body::<bool>(&h, &mut &[1u8, 7, 1][..], Some(3)).is_err());
}
