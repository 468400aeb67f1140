//! Walks a config through its `Serialize` impl, the way it will reach
//! Kengine's JSON, but without writing any JSON: building (or parsing) the
//! JSON of a large config cost more than translating it.

use serde::Serialize;
use serde::ser::{self, Impossible};

use super::super::config::CHECKED_ROUTE;
use super::{Found, Problem, Step};

/// Walks `value`, whose path in the config is `prefix`, and returns the
/// first string or map key that Kengine would refuse, with its path. With
/// `skip_checked`, routes checked as built are not walked.
pub(super) fn walk<T: Serialize + ?Sized>(
    value: &T,
    prefix: Vec<Step>,
    skip_checked: bool,
) -> Result<(), Found> {
    let mut walk = Walk {
        path: Vec::new(),
        found: None,
        skip_checked,
    };
    match value.serialize(&mut walk) {
        Ok(()) => Ok(()),
        Err(Stop) => {
            let problem = walk.found.expect("config model always serializes");
            let mut path = prefix;
            path.extend(walk.path.into_iter().filter_map(|s| match s {
                Seg::Field(k) => Some(Step::Key(k.to_string())),
                Seg::Key { key, .. } => Some(Step::Key(key)),
                Seg::Index(i) => Some(Step::Index(i)),
                Seg::Checked => None,
            }));
            Err((path, problem))
        }
    }
}

enum Seg {
    /// A struct field (or enum variant): our own name.
    Field(&'static str),
    /// A map entry; `literal` when Kengine reads this map's keys as is.
    Key { key: String, literal: bool },
    /// An array element; `usize::MAX` before the first.
    Index(usize),
    /// A route that was checked as built ([`CHECKED_ROUTE`]): its fields
    /// are skipped.
    Checked,
}

struct Walk {
    path: Vec<Seg>,
    found: Option<Problem>,
    skip_checked: bool,
}

impl Walk {
    /// The object key the value being walked sits under.
    fn key(&self) -> Option<&str> {
        match self.path.last()? {
            Seg::Field(k) => Some(k),
            Seg::Key { key, .. } => Some(key),
            Seg::Index(_) | Seg::Checked => None,
        }
    }

    fn check(&mut self, problem: Option<Problem>) -> Result<(), Stop> {
        match problem {
            Some(p) => {
                self.found = Some(p);
                Err(Stop)
            }
            None => Ok(()),
        }
    }

    fn nested<T: Serialize + ?Sized>(&mut self, seg: Seg, value: &T) -> Result<(), Stop> {
        self.path.push(seg);
        value.serialize(&mut *self)?;
        self.path.pop();
        Ok(())
    }

    fn next_index(&mut self) {
        if let Some(Seg::Index(i)) = self.path.last_mut() {
            *i = i.wrapping_add(1);
        }
    }
}

/// A problem was found (kept in `Walk::found`); the walk stops.
#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped at a value Kengine would refuse")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

macro_rules! scalars {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(self, _: $t) -> Result<(), Stop> { Ok(()) })*
    };
}

impl ser::Serializer for &mut Walk {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    scalars!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_f32: f32, serialize_f64: f64, serialize_bytes: &[u8]);

    fn serialize_char(self, c: char) -> Result<(), Stop> {
        self.serialize_str(c.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, s: &str) -> Result<(), Stop> {
        let problem = super::string_problem(self.key(), s);
        self.check(problem)
    }
    fn serialize_none(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Stop> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, v: &'static str) -> Result<(), Stop> {
        self.serialize_str(v)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Stop> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), Stop> {
        self.nested(Seg::Field(variant), v)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Stop> {
        self.path.push(Seg::Index(usize::MAX));
        Ok(self)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self, Stop> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Self, Stop> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, Stop> {
        self.path.push(Seg::Field(variant));
        self.serialize_seq(Some(len))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Stop> {
        let literal = super::literal_keys(self.key());
        self.path.push(Seg::Key {
            key: String::new(),
            literal,
        });
        Ok(self)
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Self, Stop> {
        if self.skip_checked && name == CHECKED_ROUTE {
            self.path.push(Seg::Checked);
        }
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, Stop> {
        self.path.push(Seg::Field(variant));
        Ok(self)
    }
}

impl ser::SerializeSeq for &mut Walk {
    type Ok = ();
    type Error = Stop;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Stop> {
        self.next_index();
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Stop> {
        self.path.pop();
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Walk {
    type Ok = ();
    type Error = Stop;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Stop> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<(), Stop> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for &mut Walk {
    type Ok = ();
    type Error = Stop;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Stop> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<(), Stop> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for &mut Walk {
    type Ok = ();
    type Error = Stop;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Stop> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<(), Stop> {
        self.path.pop();
        self.path.pop();
        Ok(())
    }
}

impl ser::SerializeMap for &mut Walk {
    type Ok = ();
    type Error = Stop;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Stop> {
        let name = k.serialize(KeyName)?;
        let Some(Seg::Key { key, literal }) = self.path.last_mut() else {
            unreachable!("serialize_map pushed the entry")
        };
        *key = name;
        let problem = (!*literal).then(|| super::key_problem(key)).flatten();
        self.check(problem)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Stop> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Stop> {
        self.path.pop();
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Walk {
    type Ok = ();
    type Error = Stop;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        v: &T,
    ) -> Result<(), Stop> {
        match self.path.last() {
            Some(Seg::Checked) => Ok(()),
            _ => self.nested(Seg::Field(name), v),
        }
    }
    fn end(self) -> Result<(), Stop> {
        // Nothing inside a checked route is walked, so a `Checked` on top
        // is this struct's own.
        if let Some(Seg::Checked) = self.path.last() {
            self.path.pop();
        }
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Walk {
    type Ok = ();
    type Error = Stop;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        v: &T,
    ) -> Result<(), Stop> {
        self.nested(Seg::Field(name), v)
    }
    fn end(self) -> Result<(), Stop> {
        self.path.pop();
        Ok(())
    }
}

/// Reads a map key: every map of the config model is keyed by strings.
struct KeyName;

macro_rules! not_a_key {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(self, _: $t) -> Result<String, Stop> { Err(Stop) })*
    };
}

impl ser::Serializer for KeyName {
    type Ok = String;
    type Error = Stop;
    type SerializeSeq = Impossible<String, Stop>;
    type SerializeTuple = Impossible<String, Stop>;
    type SerializeTupleStruct = Impossible<String, Stop>;
    type SerializeTupleVariant = Impossible<String, Stop>;
    type SerializeMap = Impossible<String, Stop>;
    type SerializeStruct = Impossible<String, Stop>;
    type SerializeStructVariant = Impossible<String, Stop>;

    fn serialize_str(self, s: &str) -> Result<String, Stop> {
        Ok(s.to_string())
    }
    not_a_key!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_f32: f32, serialize_f64: f64, serialize_bytes: &[u8],
        serialize_char: char, serialize_unit_struct: &'static str);
    fn serialize_none(self) -> Result<String, Stop> {
        Err(Stop)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, Stop> {
        Err(Stop)
    }
    fn serialize_unit(self) -> Result<String, Stop> {
        Err(Stop)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        v: &'static str,
    ) -> Result<String, Stop> {
        Ok(v.to_string())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<String, Stop> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, Stop> {
        Err(Stop)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Stop> {
        Err(Stop)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Stop> {
        Err(Stop)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Stop> {
        Err(Stop)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Stop> {
        Err(Stop)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Stop> {
        Err(Stop)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Stop> {
        Err(Stop)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Stop> {
        Err(Stop)
    }
}
