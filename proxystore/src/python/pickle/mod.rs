//! A pickle reader that runs nothing.
//!
//! It understands the opcodes that `pickle.dumps` uses for plain data
//! (protocols 2 to 5) and builds a tree of values; the only globals it
//! accepts are on [`ALLOWED`], and a class or function found that way is
//! never called: `REDUCE`, `NEWOBJ` and `BUILD` record what would have been
//! built, for [`super::proxy`] to interpret. Every length is checked
//! against the input before it is used, containers are shared (`Rc`) so a
//! memo reference costs nothing, and the stack, the memo and the nesting
//! are bounded by the input's size.

use std::rc::Rc;

/// The globals a proxy's pickle may name: ProxyStore's own proxy, factory,
/// key and configuration classes, the exception Python pickles as an
/// unhashable target's hash, and the types a proxy records as its
/// target's class (recorded only, never used).
pub(crate) const ALLOWED: &[(&str, &str)] = &[
    ("proxystore.proxy", "_proxy_trampoline"),
    ("proxystore.store.ref", "_proxy_trampoline"),
    ("proxystore.store.factory", "StoreFactory"),
    ("proxystore.store.factory", "PollingStoreFactory"),
    ("proxystore.store.config", "StoreConfig"),
    ("proxystore.store.config", "ConnectorConfig"),
    ("proxystore.connectors.file", "FileKey"),
    ("proxystore.connectors.redis", "RedisKey"),
    ("builtins", "TypeError"),
    ("builtins", "bytes"),
    ("builtins", "str"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "bool"),
    ("builtins", "list"),
    ("builtins", "dict"),
    ("builtins", "tuple"),
    ("numpy", "ndarray"),
];

/// Deepest nesting of containers accepted.
const MAX_DEPTH: usize = 64;

/// A value of a pickle, as data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for `i64` (kept as its little-endian bytes).
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<[Value]>),
    List(Rc<Vec<Value>>),
    Dict(Rc<Vec<(Value, Value)>>),
    Set(Rc<Vec<Value>>),
    /// An allowed global (a class or a function), by module and name.
    Global(&'static str, &'static str),
    /// `callable(*args)`, recorded, not run (`REDUCE`, `NEWOBJ`).
    Call(Rc<(Value, Value)>),
    /// An object and the state `BUILD` gave it.
    Built(Rc<(Value, Value)>),
}

impl Value {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entry of a dict (or `__dict__`-like list of pairs) under `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A stack entry; a value with its nesting depth, so that the bound is
/// checked in constant time per opcode.
enum Slot {
    Value(Value, usize),
    Mark,
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: std::collections::HashMap<u32, (Value, usize)>,
}

/// Reads a pickle into a value tree, refusing any global not in
/// [`ALLOWED`] and any opcode outside plain data.
pub(crate) fn load(input: &[u8]) -> Result<Value, String> {
    let mut m = Machine {
        input,
        pos: 0,
        stack: Vec::new(),
        memo: std::collections::HashMap::new(),
    };
    m.run()
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.input.len())
            .ok_or_else(|| format!("the pickle is truncated at byte {}", self.pos))?;
        let out = &self.input[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn uint(&mut self, n: usize) -> Result<u64, String> {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(self.take(n)?);
        Ok(u64::from_le_bytes(b))
    }

    /// A length from the input, checked against what the input still holds.
    fn len(&mut self, n: usize) -> Result<usize, String> {
        let len = self.uint(n)?;
        usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.input.len() - self.pos)
            .ok_or_else(|| format!("a length of {len} bytes runs past the end of the pickle"))
    }

    /// Pushes a scalar.
    fn push(&mut self, v: Value) -> Result<(), String> {
        self.push_at(v, 0)
    }

    fn push_at(&mut self, v: Value, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("values nest deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(Slot::Value(v, depth));
        Ok(())
    }

    /// Pushes a container of items whose deepest has `depth`.
    fn push_over(&mut self, v: Value, depth: usize) -> Result<(), String> {
        self.push_at(v, depth + 1)
    }

    fn pop_with(&mut self) -> Result<(Value, usize), String> {
        match self.stack.pop() {
            Some(Slot::Value(v, d)) => Ok((v, d)),
            _ => Err(format!("stack underflow at byte {}", self.pos)),
        }
    }

    fn pop(&mut self) -> Result<Value, String> {
        self.pop_with().map(|(v, _)| v)
    }

    /// The top value, which grows by items whose deepest has `depth`.
    fn top(&mut self, depth: usize) -> Result<&mut Value, String> {
        match self.stack.last_mut() {
            Some(Slot::Value(v, d)) => {
                *d = (*d).max(depth + 1);
                if *d > MAX_DEPTH {
                    return Err(format!("values nest deeper than {MAX_DEPTH} levels"));
                }
                Ok(v)
            }
            _ => Err(format!("stack underflow at byte {}", self.pos)),
        }
    }

    fn top_entry(&self) -> Result<(Value, usize), String> {
        match self.stack.last() {
            Some(Slot::Value(v, d)) => Ok((v.clone(), *d)),
            _ => Err(format!("stack underflow at byte {}", self.pos)),
        }
    }

    /// The values above the last mark, which is removed, and the depth of
    /// the deepest.
    fn pop_mark(&mut self) -> Result<(Vec<Value>, usize), String> {
        let at = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or("an opcode needs a mark that is not there")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        let mut deepest = 0;
        let values = items
            .into_iter()
            .map(|s| match s {
                Slot::Value(v, d) => {
                    deepest = deepest.max(d);
                    v
                }
                Slot::Mark => Value::None,
            })
            .collect();
        Ok((values, deepest))
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), String> {
        match ALLOWED.iter().find(|(m, n)| *m == module && *n == name) {
            Some((m, n)) => self.push(Value::Global(m, n)),
            None => Err(format!(
                "the pickle refers to `{module}.{name}`, which is not one of ProxyStore's proxy \
                 classes; only proxies and their factories are read, nothing in them is run"
            )),
        }
    }

    fn text(bytes: &[u8]) -> Result<Rc<str>, String> {
        std::str::from_utf8(bytes)
            .map(Rc::from)
            .map_err(|_| "a string of the pickle is not valid utf-8".into())
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.byte()?;
            match op {
                0x80 => {
                    let proto = self.byte()?;
                    if !(2..=5).contains(&proto) {
                        return Err(format!("pickle protocol {proto} is not supported"));
                    }
                }
                0x95 => {
                    self.uint(8)?; // FRAME: a hint only
                }
                b'.' => {
                    let v = self.pop()?;
                    return if self.stack.is_empty() {
                        Ok(v)
                    } else {
                        Err("values are left on the stack at the end of the pickle".into())
                    };
                }
                b'(' => self.stack.push(Slot::Mark),
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = self.uint(4)? as u32 as i32;
                    self.push(Value::Int(v.into()))?
                }
                b'K' => {
                    let v = self.uint(1)?;
                    self.push(Value::Int(v as i64))?
                }
                b'M' => {
                    let v = self.uint(2)?;
                    self.push(Value::Int(v as i64))?
                }
                0x8a | 0x8b => {
                    let n = self.len(if op == 0x8a { 1 } else { 4 })?;
                    let bytes = self.take(n)?;
                    let v = if n <= 8 {
                        let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                            0xff
                        } else {
                            0
                        };
                        let mut b = [fill; 8];
                        b[..n].copy_from_slice(bytes);
                        Value::Int(i64::from_le_bytes(b))
                    } else {
                        Value::BigInt(Rc::from(bytes))
                    };
                    self.push(v)?
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.push(Value::Float(f64::from_be_bytes(b.try_into().expect("8"))))?
                }
                0x8c | b'X' | 0x8d => {
                    let n = self.len(match op {
                        0x8c => 1,
                        b'X' => 4,
                        _ => 8,
                    })?;
                    let s = Self::text(self.take(n)?)?;
                    self.push(Value::Str(s))?
                }
                b'C' | b'B' | 0x8e => {
                    let n = self.len(match op {
                        b'C' => 1,
                        b'B' => 4,
                        _ => 8,
                    })?;
                    let b = self.take(n)?;
                    self.push(Value::Bytes(Rc::from(b)))?
                }
                b')' => self.push(Value::Tuple(Rc::from([])))?,
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = (0..n)
                        .map(|_| self.pop_with())
                        .collect::<Result<Vec<_>, _>>()?;
                    items.reverse();
                    let deepest = items.iter().map(|(_, d)| *d).max().unwrap_or(0);
                    let items: Vec<Value> = items.into_iter().map(|(v, _)| v).collect();
                    self.push_over(Value::Tuple(Rc::from(items)), deepest)?
                }
                b't' => {
                    let (items, d) = self.pop_mark()?;
                    self.push_over(Value::Tuple(Rc::from(items)), d)?
                }
                b']' => self.push(Value::List(Rc::new(Vec::new())))?,
                b'l' => {
                    let (items, d) = self.pop_mark()?;
                    self.push_over(Value::List(Rc::new(items)), d)?
                }
                b'a' => {
                    let (v, d) = self.pop_with()?;
                    match self.top(d)? {
                        Value::List(l) => Rc::make_mut(l).push(v),
                        _ => return Err("APPEND to something that is not a list".into()),
                    }
                }
                b'e' => {
                    let (items, d) = self.pop_mark()?;
                    match self.top(d)? {
                        Value::List(l) => Rc::make_mut(l).extend(items),
                        _ => return Err("APPENDS to something that is not a list".into()),
                    }
                }
                b'}' => self.push(Value::Dict(Rc::new(Vec::new())))?,
                b'd' => {
                    let (items, d) = self.pop_mark()?;
                    self.push_over(Value::Dict(Rc::new(pairs(items)?)), d)?
                }
                b's' => {
                    let (v, dv) = self.pop_with()?;
                    let (k, dk) = self.pop_with()?;
                    match self.top(dv.max(dk))? {
                        Value::Dict(d) => Rc::make_mut(d).push((k, v)),
                        _ => return Err("SETITEM on something that is not a dict".into()),
                    }
                }
                b'u' => {
                    let (items, d) = self.pop_mark()?;
                    let items = pairs(items)?;
                    match self.top(d)? {
                        Value::Dict(d) => Rc::make_mut(d).extend(items),
                        _ => return Err("SETITEMS on something that is not a dict".into()),
                    }
                }
                0x8f => self.push(Value::Set(Rc::new(Vec::new())))?,
                0x90 => {
                    let (items, d) = self.pop_mark()?;
                    match self.top(d)? {
                        Value::Set(s) => Rc::make_mut(s).extend(items),
                        _ => return Err("ADDITEMS on something that is not a set".into()),
                    }
                }
                0x91 => {
                    let (items, d) = self.pop_mark()?;
                    self.push_over(Value::Set(Rc::new(items)), d)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.as_str(), name.as_str()) {
                        (Some(m), Some(n)) => self.global(m, n)?,
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(&module, &name)?
                }
                b'R' | 0x81 => {
                    let (args, d) = self.pop_with()?;
                    let callable = self.pop()?;
                    if !matches!(callable, Value::Global(..)) || !matches!(args, Value::Tuple(_)) {
                        return Err(format!(
                            "byte {at}: only ProxyStore's allowed classes may be built, with a \
                             tuple of arguments"
                        ));
                    }
                    self.push_over(Value::Call(Rc::new((callable, args))), d)?
                }
                b'b' => {
                    let (state, ds) = self.pop_with()?;
                    let (object, dobj) = self.pop_with()?;
                    if !matches!(object, Value::Call(_)) {
                        return Err(format!(
                            "byte {at}: BUILD of something that is not an object"
                        ));
                    }
                    self.push_over(Value::Built(Rc::new((object, state))), ds.max(dobj))?
                }
                // The memo keeps the value as it is now: a container
                // filled after it was memoized is seen empty through the
                // memo (Python would share it). Proxies never do that, and
                // the difference can only make a pickle read as less data.
                0x94 => {
                    let index = self.memo.len() as u32;
                    let entry = self.top_entry()?;
                    self.memo.insert(index, entry);
                }
                b'q' | b'r' => {
                    let index = self.uint(if op == b'q' { 1 } else { 4 })? as u32;
                    let entry = self.top_entry()?;
                    self.memo.insert(index, entry);
                }
                b'h' | b'j' => {
                    let index = self.uint(if op == b'h' { 1 } else { 4 })? as u32;
                    let (v, d) =
                        self.memo.get(&index).cloned().ok_or_else(|| {
                            format!("byte {at}: memo entry {index} is not defined")
                        })?;
                    self.push_at(v, d)?
                }
                b'0' => {
                    self.stack.pop().ok_or("POP on an empty stack")?;
                }
                b'2' => {
                    let (v, d) = self.top_entry()?;
                    self.push_at(v, d)?
                }
                other => {
                    return Err(format!(
                        "byte {at}: pickle opcode 0x{other:02x} is not read (only plain data and \
                         ProxyStore's proxies are)"
                    ))
                }
            }
        }
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.input[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("GLOBAL's name is not terminated")?;
        let line = Self::text(&rest[..end])?;
        self.pos += end + 1;
        Ok(line.to_string())
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("a dict has a key without a value".into());
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// Writes pickles of plain data and allowed globals (protocol 4, no memo).
pub(crate) struct Writer {
    out: Vec<u8>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Writer { out: vec![0x80, 4] }
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.out.push(b'.');
        self.out
    }

    pub(crate) fn value(&mut self, v: &Value) {
        match v {
            Value::None => self.out.push(b'N'),
            Value::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            Value::Int(i) => {
                self.out.push(0x8a);
                let bytes = i.to_le_bytes();
                self.out.push(8);
                self.out.extend_from_slice(&bytes);
            }
            Value::BigInt(b) => {
                self.out.push(0x8b);
                self.out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                self.out.extend_from_slice(b);
            }
            Value::Float(f) => {
                self.out.push(b'G');
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Str(s) => {
                self.out.push(b'X');
                self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                self.out.extend_from_slice(s.as_bytes());
            }
            Value::Bytes(b) => {
                self.out.push(b'B');
                self.out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                self.out.extend_from_slice(b);
            }
            Value::Tuple(items) => {
                self.out.push(b'(');
                items.iter().for_each(|i| self.value(i));
                self.out.push(b't');
            }
            Value::List(items) => {
                self.out.push(b'(');
                items.iter().for_each(|i| self.value(i));
                self.out.push(b'l');
            }
            Value::Dict(entries) => {
                self.out.push(b'}');
                if !entries.is_empty() {
                    self.out.push(b'(');
                    for (k, v) in entries.iter() {
                        self.value(k);
                        self.value(v);
                    }
                    self.out.push(b'u');
                }
            }
            Value::Set(items) => {
                self.out.push(b'(');
                items.iter().for_each(|i| self.value(i));
                self.out.push(0x91);
            }
            Value::Global(m, n) => {
                self.value(&Value::Str(Rc::from(*m)));
                self.value(&Value::Str(Rc::from(*n)));
                self.out.push(0x93);
            }
            Value::Call(call) => {
                self.value(&call.0);
                self.value(&call.1);
                // Classes are built with NEWOBJ (`cls.__new__`), functions
                // are called with REDUCE, as `pickle.dumps` does.
                let is_class =
                    matches!(&call.0, Value::Global(_, n) if n.starts_with(char::is_uppercase));
                self.out.push(if is_class { 0x81 } else { b'R' });
            }
            Value::Built(built) => {
                self.value(&built.0);
                self.value(&built.1);
                self.out.push(b'b');
            }
        }
    }
}

/// The allowed global `module.name`.
pub(crate) fn global(module: &str, name: &str) -> Value {
    let (m, n) = ALLOWED
        .iter()
        .find(|(m, n)| *m == module && *n == name)
        .expect("an allowed global");
    Value::Global(m, n)
}

#[cfg(test)]
mod tests;
