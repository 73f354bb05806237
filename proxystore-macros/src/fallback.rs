//! What to emit when the attribute or the fn is wrong: the user's item
//! unchanged, the errors, and a stand-in for the task module, so the rest of
//! the crate (calls to `f(..)` and `f::task(..)`) still type-checks and the
//! build shows only the real mistakes.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{FnArg, Item, ItemFn, ReturnType, Type};

use crate::ast;
use crate::ty::{self, Problem};

pub(crate) fn expand(input: &TokenStream, item: Option<&Item>, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    let stand_in = match item {
        Some(Item::Fn(func)) => stand_in(func),
        _ => None,
    };
    quote! {
        #input
        #error
        #stand_in
    }
}

/// `mod f { pub const NAME; pub fn task(..) }` with `task` taking anything,
/// as many arguments as the fn has, and returning the task type if it can
/// be named (`!` otherwise); it is never called, since the build fails.
///
/// None for a method: it sits in an impl block, where a module cannot.
fn stand_in(func: &ItemFn) -> Option<TokenStream> {
    let sig = &func.sig;
    if sig
        .inputs
        .iter()
        .any(|input| matches!(input, FnArg::Receiver(_)))
        || mentions_self(func)
    {
        return None;
    }
    let cfgs = func.attrs.iter().filter(|attr| attr.path().is_ident("cfg"));
    let vis = &func.vis;
    let ident = &sig.ident;
    let params = sig
        .inputs
        .iter()
        .map(|_| quote!(_: impl ::core::marker::Sized));
    let output = match result_type(func) {
        Some(result) => quote!(::proxystore::Task<#result>),
        None => quote!(!),
    };
    Some(quote! {
        #(#cfgs)*
        #[allow(
            non_snake_case,
            dead_code,
            missing_docs,
            unreachable_pub,
            clippy::module_inception,
            clippy::too_many_arguments
        )]
        #vis mod #ident {
            #[allow(unused_imports)]
            use super::*;

            pub const NAME: &str = ::core::module_path!();

            pub fn task(#(#params),*) -> #output {
                ::core::unreachable!()
            }
        }
    })
}

/// The task's result type, if it can be named inside the stand-in.
fn result_type(func: &ItemFn) -> Option<Type> {
    if !func.sig.generics.params.is_empty() {
        return None;
    }
    let returned = match &func.sig.output {
        ReturnType::Default => return Some(syn::parse_quote!(())),
        ReturnType::Type(_, returned) => &**returned,
    };
    let result = ast::ok_type(returned).map_or(returned, |(ok, _)| ok);
    if matches!(result, Type::Never(_)) || !ty::problems(result).is_empty() {
        return None;
    }
    Some(ty::rescope(result))
}

fn mentions_self(func: &ItemFn) -> bool {
    let sig = &func.sig;
    let returned = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, returned) => Some(&**returned),
    };
    sig.inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(typed) => Some(&*typed.ty),
            FnArg::Receiver(_) => None,
        })
        .chain(returned)
        .any(|ty| {
            ty::problems(ty)
                .iter()
                .any(|problem| matches!(problem, Problem::SelfType(_)))
        })
}
