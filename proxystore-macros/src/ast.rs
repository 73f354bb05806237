//! The model of a `#[proxied]` fn that code generation reads: built from
//! the parsed item, and only when every check in [`crate::valid`] passed.

use proc_macro2::{Ident, Span};
use quote::format_ident;
use syn::spanned::Spanned;
use syn::{
    parse_quote, Attribute, FnArg, GenericArgument, Item, LitStr, Pat, PathArguments, Type,
    Visibility,
};

use crate::attr::Args;
use crate::ty;
use crate::valid::{self, Errors};

/// A fn that can run as a task.
pub(crate) struct Task<'a> {
    /// The fn's `#[cfg(..)]` attributes: what is generated beside the fn
    /// exists exactly when the fn does.
    pub(crate) cfgs: Vec<&'a Attribute>,
    pub(crate) vis: &'a Visibility,
    pub(crate) ident: &'a Ident,
    /// `name = ".."`, or `None` for the module path.
    pub(crate) name: Option<LitStr>,
    pub(crate) params: Vec<Param>,
    pub(crate) output: Output,
    /// `types = [..]`, in order.
    pub(crate) listed: Vec<Listed>,
}

/// One parameter of the fn, and of `task`.
pub(crate) struct Param {
    /// Its name in `task`: the fn's own (without `mut`), or a fresh one for `_`.
    pub(crate) ident: Ident,
    /// The type as written in the signature.
    pub(crate) written: Type,
    /// The same type, named from inside the generated module (by the listed
    /// type's tokens, if listed).
    pub(crate) ty: Type,
    /// Whether its type is listed in `types`.
    pub(crate) listed: bool,
}

/// What the task produces.
pub(crate) struct Output {
    /// The result type as written: the return type, `()`, or `T` of `Result<T, E>`.
    pub(crate) written: Type,
    /// The same type, named from inside the generated module (by the listed
    /// type's tokens, if listed).
    pub(crate) ty: Type,
    /// `Some` when the fn returns a `Result`, whose `Err` fails the task.
    pub(crate) fallible: Option<Fallible>,
    /// Whether the result type is listed in `types`.
    pub(crate) listed: bool,
}

/// The `Result` returned by a fallible task's fn.
pub(crate) struct Fallible {
    /// The whole return type, as written.
    pub(crate) written: Type,
    /// Where an error type without `Display` is reported: `E` in
    /// `Result<T, E>`, `Result` in `io::Result<T>`.
    pub(crate) error_span: Span,
}

/// One type of `types = [..]`.
pub(crate) struct Listed {
    /// As written in the attribute, with its span.
    pub(crate) written: Type,
    /// The same type, named from inside the generated module.
    pub(crate) ty: Type,
}

impl<'a> Task<'a> {
    /// Checks `item` against the arguments; every mistake found is in the error.
    pub(crate) fn from_syn(args: syn::Result<Args>, item: &'a Item) -> syn::Result<Self> {
        let mut errors = Errors::default();
        let args = match args {
            Ok(mut args) => {
                if let Err(error) = std::mem::take(&mut args.errors).finish() {
                    errors.push(error);
                }
                Some(args)
            }
            Err(error) => {
                errors.push(error);
                None
            }
        };
        let Item::Fn(func) = item else {
            return Err(errors.fail(valid::not_a_fn(item)));
        };
        let sig = &func.sig;
        valid::signature(sig, &mut errors);
        let mut params = Vec::new();
        for (index, input) in sig.inputs.iter().enumerate() {
            params.extend(Param::from_syn(index, input, &mut errors));
        }
        let mut output = Output::from_syn(valid::written_return(&sig.output), &mut errors);

        let checked_args = args.is_some();
        let Args { types, name, .. } = args.unwrap_or_default();
        let listed: Vec<Listed> = types
            .into_iter()
            .map(|written| Listed {
                ty: ty::rescope(&written),
                written,
            })
            .collect();
        // A listed parameter or result is named in the generated code by the
        // listed tokens: a type that is not storable then fails every bound
        // at the same place in `types = [..]`, and rustc reports it once.
        let find_listed = |written: &Type| {
            let key = ty::key(written);
            listed.iter().find(|l| ty::key(&l.written) == key)
        };
        for param in &mut params {
            if let Some(listed) = find_listed(&param.written) {
                param.ty = listed.ty.clone();
                param.listed = true;
            }
        }
        if let Some(listed) = find_listed(&output.written) {
            output.ty = listed.ty.clone();
            output.listed = true;
        }

        let task = Task {
            cfgs: func
                .attrs
                .iter()
                .filter(|attr| attr.path().is_ident("cfg"))
                .collect(),
            vis: &func.vis,
            ident: &sig.ident,
            name,
            params,
            output,
            listed,
        };
        if checked_args {
            task.validate_listed(&mut errors);
        }
        errors.finish()?;
        Ok(task)
    }
}

impl Param {
    fn from_syn(index: usize, input: &FnArg, errors: &mut Errors) -> Option<Self> {
        let FnArg::Typed(typed) = input else {
            errors.push(valid::receiver(input));
            return None;
        };
        valid::param_attrs(&typed.attrs, errors);
        valid::param_type(&typed.ty, errors);
        let ident = match &*typed.pat {
            // `mut` and `ref` only concern the fn's body.
            Pat::Ident(pat) if pat.subpat.is_none() => pat.ident.clone(),
            Pat::Wild(_) => format_ident!("__arg{}", index, span = Span::mixed_site()),
            pat => {
                errors.push(valid::pattern(pat));
                return None;
            }
        };
        Some(Param {
            ident,
            ty: ty::rescope(&typed.ty),
            written: (*typed.ty).clone(),
            listed: false,
        })
    }
}

impl Output {
    fn from_syn(returned: Option<&Type>, errors: &mut Errors) -> Self {
        let Some(returned) = returned else {
            return Output {
                written: parse_quote!(()),
                ty: parse_quote!(()),
                fallible: None,
                listed: false,
            };
        };
        valid::return_type(returned, errors);
        let (written, fallible) = match ok_type(returned) {
            Some((ok, error_span)) => (
                ok.clone(),
                Some(Fallible {
                    written: returned.clone(),
                    error_span,
                }),
            ),
            None => (returned.clone(), None),
        };
        Output {
            ty: ty::rescope(&written),
            written,
            fallible,
            listed: false,
        }
    }
}

/// `T` and where to report `E`, if `ty` is a `Result<T, ..>`: any path whose
/// last segment is `Result` with a type argument (`io::Result<T>`,
/// `anyhow::Result<T>`, a crate's own alias).
pub(crate) fn ok_type(ty: &Type) -> Option<(&Type, Span)> {
    let Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    let ok = types.next()?;
    let error_span = types.next().map_or(last.ident.span(), |error| error.span());
    Some((ok, error_span))
}
