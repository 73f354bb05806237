//! What `#[proxied]` accepts. Each check reports on the smallest tokens
//! that are wrong, with a message that says what to write instead, and every
//! check runs, so one build shows every mistake.

use quote::quote;
use syn::{Attribute, FnArg, Item, Pat, ReturnType, Signature, Type};

use crate::ast::Task;
use crate::ty::{self, Problem};

/// Errors collected across checks, reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Adds a last error and returns them all.
    pub(crate) fn fail(self, error: syn::Error) -> syn::Error {
        match self.0 {
            Some(mut errors) => {
                errors.combine(error);
                errors
            }
            None => error,
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// `#[proxied]` on a struct, an impl block, a fn without a body, ...
pub(crate) fn not_a_fn(item: &Item) -> syn::Error {
    const MESSAGE: &str = "#[proxied] can only be applied to a free function";
    match item {
        Item::Struct(s) => keyword_and_name(s.struct_token, &s.ident, MESSAGE),
        Item::Enum(e) => keyword_and_name(e.enum_token, &e.ident, MESSAGE),
        Item::Union(u) => keyword_and_name(u.union_token, &u.ident, MESSAGE),
        Item::Trait(t) => keyword_and_name(t.trait_token, &t.ident, MESSAGE),
        Item::Impl(i) => keyword_and_name(i.impl_token, &i.self_ty, MESSAGE),
        Item::Mod(m) => keyword_and_name(m.mod_token, &m.ident, MESSAGE),
        Item::Const(c) => keyword_and_name(c.const_token, &c.ident, MESSAGE),
        Item::Static(s) => keyword_and_name(s.static_token, &s.ident, MESSAGE),
        Item::Type(t) => keyword_and_name(t.type_token, &t.ident, MESSAGE),
        other => syn::Error::new_spanned(other, MESSAGE),
    }
}

/// An error on `struct Name`, `impl Type`, ...: what the item is, not its body.
fn keyword_and_name(
    keyword: impl quote::ToTokens,
    name: impl quote::ToTokens,
    message: &str,
) -> syn::Error {
    syn::Error::new_spanned(quote!(#keyword #name), message)
}

/// Everything about the fn itself, as opposed to its parameters and result.
pub(crate) fn signature(sig: &Signature, errors: &mut Errors) {
    if let Some(token) = &sig.constness {
        errors.push(syn::Error::new_spanned(
            token,
            "#[proxied] does not support `const fn`: remove `const`, or keep this fn \
             and call it from a plain fn that has #[proxied]",
        ));
    }
    if let Some(token) = &sig.asyncness {
        errors.push(syn::Error::new_spanned(
            token,
            "#[proxied] does not support `async fn` yet: write a plain fn that blocks on \
             the future itself (for example with your async runtime's `block_on`)",
        ));
    }
    if let Some(token) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(
            token,
            "#[proxied] cannot be applied to an `unsafe fn`: a task runner cannot uphold \
             its safety contract; write a safe fn that checks it and calls this one \
             in an `unsafe` block",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "#[proxied] fn must use the Rust ABI: remove the `extern` ABI, or call this fn \
             from a plain fn that has #[proxied]",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            "#[proxied] fn cannot be variadic: a task takes a fixed list of arguments",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let generics = &sig.generics;
        let where_clause = &sig.generics.where_clause;
        let tokens = if generics.params.is_empty() {
            quote!(#where_clause)
        } else {
            quote!(#generics)
        };
        errors.push(syn::Error::new_spanned(
            tokens,
            "#[proxied] fn cannot be generic: a worker finds the task by name and must \
             know the concrete types to decode; write a non-generic fn with concrete \
             types that calls this one",
        ));
    }
}

/// `self`, `&self`, ... in any form.
pub(crate) fn receiver(input: &FnArg) -> syn::Error {
    syn::Error::new_spanned(
        input,
        "#[proxied] cannot be applied to a method: a worker calls a task by name, with no \
         receiver; move it to a free function that takes the value as an ordinary parameter",
    )
}

/// `#[cfg]` would make the task's argument list depend on the build, and
/// `task`, `__run` and every worker must agree on it.
pub(crate) fn param_attrs(attrs: &[Attribute], errors: &mut Errors) {
    for attr in attrs {
        if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
            errors.push(syn::Error::new_spanned(
                attr,
                "#[proxied] fn parameters cannot be conditional: the task's arguments must \
                 be the same in every build; use a separate fn per configuration",
            ));
        }
    }
}

pub(crate) fn pattern(pat: &Pat) -> syn::Error {
    syn::Error::new_spanned(
        pat,
        "#[proxied] fn parameters must be plain names (`name: Type`), so the generated \
         `task` can take them by name; destructure inside the fn body instead",
    )
}

/// A parameter's type: owned, concrete, nameable outside an impl block.
pub(crate) fn param_type(ty: &Type, errors: &mut Errors) {
    for problem in ty::problems(ty) {
        errors.push(match problem {
            Problem::ImplTrait(ty) => syn::Error::new_spanned(
                ty,
                "#[proxied] fn parameters cannot be `impl Trait`: a worker decodes each \
                 argument and needs its concrete type; name the type",
            ),
            Problem::Reference(reference) => syn::Error::new_spanned(
                reference,
                format!(
                    "#[proxied] fn parameters must be owned, so they can be sent to another \
                     process: take `{}` instead of `{}`",
                    ty::owned(reference),
                    ty::display(&Type::Reference(reference.clone())),
                ),
            ),
            Problem::SelfType(ident) => self_type(ident),
        });
    }
}

/// The return type: what a worker sends back, so the same rules as parameters.
pub(crate) fn return_type(ty: &Type, errors: &mut Errors) {
    if let Type::Never(never) = ty {
        errors.push(syn::Error::new_spanned(
            never,
            "#[proxied] fn must be able to return: a task that returns `!` never finishes; \
             return `()` instead",
        ));
        return;
    }
    for problem in ty::problems(ty) {
        errors.push(match problem {
            Problem::ImplTrait(ty) => syn::Error::new_spanned(
                ty,
                "#[proxied] fn cannot return `impl Trait`: the caller decodes the result and \
                 needs its concrete type; name the type",
            ),
            Problem::Reference(reference) => syn::Error::new_spanned(
                reference,
                format!(
                    "#[proxied] fn must return an owned value, so it can be sent back from \
                     another process: return `{}` instead of `{}`",
                    ty::owned(reference),
                    ty::display(&Type::Reference(reference.clone())),
                ),
            ),
            Problem::SelfType(ident) => self_type(ident),
        });
    }
}

fn self_type(ident: &syn::Ident) -> syn::Error {
    syn::Error::new_spanned(
        ident,
        "#[proxied] can only be applied to a free function, and `Self` only has a meaning \
         inside an impl block or a trait; move the fn out and name the type",
    )
}

impl Task<'_> {
    /// Every type in `types = [..]` must be used, once.
    pub(crate) fn validate_listed(&self, errors: &mut Errors) {
        for (index, listed) in self.listed.iter().enumerate() {
            let key = ty::key(&listed.written);
            let shown = ty::display(&listed.written);
            if self.listed[..index]
                .iter()
                .any(|l| ty::key(&l.written) == key)
            {
                errors.push(syn::Error::new_spanned(
                    &listed.written,
                    format!("`{shown}` is listed twice in `types`"),
                ));
                continue;
            }
            let used = self.params.iter().any(|p| ty::key(&p.written) == key)
                || ty::key(&self.output.written) == key;
            if used {
                continue;
            }
            let last = ty::last_segment_key(&listed.written);
            let spelled_otherwise = self
                .params
                .iter()
                .map(|p| &p.written)
                .chain([&self.output.written])
                .find(|written| last.is_some() && ty::last_segment_key(written) == last);
            let message = match (&self.output.fallible, spelled_otherwise) {
                (Some(fallible), _) if ty::key(&fallible.written) == key => format!(
                    "`{shown}` is listed in `types`, but a fn that returns `Result` is a \
                     fallible task whose result is the `Ok` type: list `{}` instead",
                    ty::display(&self.output.written),
                ),
                (_, Some(written)) => format!(
                    "`{shown}` is listed in `types` but the signature writes `{}`: types are \
                     compared as written, so spell it the same way",
                    ty::display(written),
                ),
                _ => format!(
                    "`{shown}` is listed in `types` but no parameter or the return value has \
                     this type (types are compared as written: spell it as in the signature)"
                ),
            };
            errors.push(syn::Error::new_spanned(&listed.written, message));
        }
    }
}

/// `-> T` or nothing, as the fn's return type.
pub(crate) fn written_return(output: &ReturnType) -> Option<&Type> {
    match output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) => Some(ty),
    }
}
