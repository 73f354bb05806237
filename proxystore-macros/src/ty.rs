//! Questions about the types written in a signature, answered on syntax
//! alone: a proc macro sees tokens, not resolved types.

use proc_macro2::Ident;
use quote::ToTokens;
use syn::visit::{self, Visit};
use syn::visit_mut::{self, VisitMut};
use syn::{Path, PathSegment, Type, TypeImplTrait, TypeReference};

/// The text under which a type is compared with the types listed in
/// `types = [..]`: its tokens, so `Vec<f64>` and `Vec < f64 >` match but
/// `Vec<f64>` and `std::vec::Vec<f64>` (or an alias of it) do not.
pub(crate) fn key(ty: &Type) -> String {
    peel(ty).to_token_stream().to_string()
}

/// The last segment of a path type, with its arguments (`Vec<f64>` for
/// `std::vec::Vec<f64>`), to spot the same type spelled another way.
pub(crate) fn last_segment_key(ty: &Type) -> Option<String> {
    match peel(ty) {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .map(|segment| segment.to_token_stream().to_string()),
        _ => None,
    }
}

/// A type as a person writes it, for messages: `Vec<f64>`, not `Vec < f64 >`.
pub(crate) fn display(ty: &Type) -> String {
    let mut text = peel(ty).to_token_stream().to_string();
    for (from, to) in [
        (" :: ", "::"),
        (":: ", "::"),
        (" < ", "<"),
        ("< ", "<"),
        (" <", "<"),
        (" >", ">"),
        (" ,", ","),
        (" ;", ";"),
        ("& ", "&"),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
    ] {
        text = text.replace(from, to);
    }
    text
}

/// Invisible groups come from `macro_rules!` fragments (`$t:ty`); they are not
/// part of the type as the user reads it.
fn peel(mut ty: &Type) -> &Type {
    while let Type::Group(group) = ty {
        ty = &group.elem;
    }
    ty
}

/// What can appear in the signature of a plain fn but not in a task's.
pub(crate) enum Problem<'a> {
    /// `impl Trait`: a worker must decode a concrete type.
    ImplTrait(&'a TypeImplTrait),
    /// `&T`: values cross process boundaries, so they must be owned.
    Reference(&'a TypeReference),
    /// `Self`: only means something inside an `impl` or a trait.
    SelfType(&'a Ident),
}

/// Every problem in `ty`, outermost first. Function pointers and trait
/// objects are not looked into: their own parameters (`fn(&str)`) are not
/// values that travel.
pub(crate) fn problems(ty: &Type) -> Vec<Problem<'_>> {
    let mut finder = Finder(Vec::new());
    finder.visit_type(ty);
    finder.0
}

struct Finder<'a>(Vec<Problem<'a>>);

impl<'a> Visit<'a> for Finder<'a> {
    fn visit_type_impl_trait(&mut self, ty: &'a TypeImplTrait) {
        self.0.push(Problem::ImplTrait(ty));
    }

    fn visit_type_reference(&mut self, ty: &'a TypeReference) {
        self.0.push(Problem::Reference(ty));
    }

    fn visit_type_bare_fn(&mut self, _: &'a syn::TypeBareFn) {}

    fn visit_type_trait_object(&mut self, _: &'a syn::TypeTraitObject) {}

    fn visit_path(&mut self, path: &'a Path) {
        match path.segments.first() {
            Some(first) if first.ident == "Self" => self.0.push(Problem::SelfType(&first.ident)),
            _ => visit::visit_path(self, path),
        }
    }
}

/// The owned type to suggest instead of a reference: `String` for `&str`,
/// `Vec<T>` for `&[T]`, `T` for `&T`.
pub(crate) fn owned(reference: &TypeReference) -> String {
    let elem = peel(&reference.elem);
    if let Type::Path(path) = elem {
        let mut path = path.clone();
        if let Some(last) = path.path.segments.last_mut() {
            let owned = match last.ident.to_string().as_str() {
                "str" => Some("String"),
                "Path" => Some("PathBuf"),
                "OsStr" => Some("OsString"),
                "CStr" => Some("CString"),
                _ => None,
            };
            if let (Some(owned), true) = (owned, last.arguments.is_none()) {
                last.ident = Ident::new(owned, last.ident.span());
                return display(&Type::Path(path));
            }
        }
    }
    match elem {
        Type::Slice(slice) => format!("Vec<{}>", display(&slice.elem)),
        Type::TraitObject(_) => format!("Box<{}>", display(elem)),
        _ => display(elem),
    }
}

/// Rewrites `ty` so it names the same type one module further down, inside
/// the generated module: `self::X` becomes `super::X` and `super::X` becomes
/// `super::super::X`. Paths from the crate root, extern crates and names
/// brought in by `use super::*` need no change.
pub(crate) fn rescope(ty: &Type) -> Type {
    let mut ty = ty.clone();
    Rescope.visit_type_mut(&mut ty);
    ty
}

struct Rescope;

impl VisitMut for Rescope {
    fn visit_path_mut(&mut self, path: &mut Path) {
        if path.leading_colon.is_none() {
            if let Some(first) = path.segments.first_mut() {
                let span = first.ident.span();
                if first.ident == "self" {
                    first.ident = Ident::new("super", span);
                } else if first.ident == "super" {
                    path.segments
                        .insert(0, PathSegment::from(Ident::new("super", span)));
                }
            }
        }
        visit_mut::visit_path_mut(self, path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn keys_ignore_spacing_only() {
        let a: Type = parse_quote!(Vec<Vec<f64>>);
        let b: Type = syn::parse_str("Vec< Vec<f64> >").unwrap();
        let c: Type = parse_quote!(std::vec::Vec<Vec<f64>>);
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
    }

    #[test]
    fn displays_like_source() {
        let ty: Type = parse_quote!(std::collections::HashMap<String, Vec<[u8; 4]>>);
        assert_eq!(
            display(&ty),
            "std::collections::HashMap<String, Vec<[u8; 4]>>"
        );
        let ty: Type = parse_quote!(&'static mut (i32, String));
        assert_eq!(display(&ty), "&'static mut (i32, String)");
    }

    #[test]
    fn suggests_owned_types() {
        let owned_of = |ty: Type| match ty {
            Type::Reference(r) => owned(&r),
            _ => unreachable!(),
        };
        assert_eq!(owned_of(parse_quote!(&str)), "String");
        assert_eq!(owned_of(parse_quote!(&[f64])), "Vec<f64>");
        assert_eq!(owned_of(parse_quote!(&mut Vec<u8>)), "Vec<u8>");
        assert_eq!(
            owned_of(parse_quote!(&std::path::Path)),
            "std::path::PathBuf"
        );
    }

    #[test]
    fn finds_problems_outside_fn_pointers() {
        let ty: Type = parse_quote!((Vec<&str>, impl Clone, Self, fn(&str)));
        let kinds: Vec<&str> = problems(&ty)
            .iter()
            .map(|p| match p {
                Problem::ImplTrait(_) => "impl",
                Problem::Reference(_) => "ref",
                Problem::SelfType(_) => "Self",
            })
            .collect();
        assert_eq!(kinds, ["ref", "impl", "Self"]);
    }

    #[test]
    fn rescopes_relative_paths() {
        let ty: Type = parse_quote!(Vec<(self::A, super::B, crate::C, D)>);
        assert_eq!(
            display(&rescope(&ty)),
            "Vec<(super::A, super::super::B, crate::C, D)>"
        );
    }
}
