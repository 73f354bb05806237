//! Code generation: reads only the validated [`Task`] model.
//!
//! Beside the user's fn (re-emitted untouched) goes a module of the same
//! name and visibility: fns live in the value namespace and modules in the
//! type namespace, so `concat(..)` and `concat::task(..)` both work.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::Task;

/// The user's fn, then its task module.
pub(crate) fn task(input: &TokenStream, task: &Task<'_>) -> TokenStream {
    let Task {
        cfgs, vis, ident, ..
    } = task;

    // The generated module calls the fn through this alias of it, made
    // beside the fn. A fn declared inside another fn's body is not visible
    // from the module (whose `super` is the enclosing *module*, not the
    // block), so there the build fails on the fn's name with "cannot find
    // function `NAME_must_be_declared_at_module_level_not_inside_a_fn_body`
    // in module `super`".
    let at_module_level = format_ident!(
        "{}_must_be_declared_at_module_level_not_inside_a_fn_body",
        ident,
        span = ident.span()
    );
    let alias = quote_spanned! {ident.span()=>
        #(#cfgs)*
        #[doc(hidden)]
        #[allow(unused_imports)]
        use #ident as #at_module_level;
    };

    let docs = Docs::new(task);
    let module_doc = &docs.module;
    let name_doc = &docs.name;
    let task_doc = &docs.task;
    let name = match &task.name {
        Some(name) => quote!(#name),
        None => quote!(::core::module_path!()),
    };
    let task_fn = task_fn(task);
    let run_fn = run_fn(task, &at_module_level);
    let registration = quote_spanned! {ident.span()=>
        ::proxystore::__private::inventory::submit! {
            ::proxystore::__private::TaskEntry::new(NAME, __run, ::core::file!(), ::core::line!())
        }
    };
    // One per listed type, at that type in `types = [..]`, so a type that is
    // not storable fails there.
    let statics = task.listed.iter().map(|listed| {
        let assertion = assertion(&listed.ty, listed.written.span());
        quote!(const _: () = #assertion;)
    });

    let body = quote! {
        #[allow(unused_imports)]
        use super::*;

        #[doc = #name_doc]
        pub const NAME: &str = #name;

        #(#statics)*

        #[doc = #task_doc]
        #task_fn

        #run_fn

        #registration
    };
    // The module's own tokens are at the fn's name: in an impl block, where
    // rustc rejects both the alias and the module ("... is not supported in
    // `trait`s or `impl`s"), both errors point there.
    let module = quote_spanned! {ident.span()=>
        #(#cfgs)*
        #[doc = #module_doc]
        #[allow(
            non_snake_case,
            dead_code,
            unreachable_pub,
            clippy::module_inception,
            clippy::too_many_arguments
        )]
        #vis mod #ident {
            #body
        }
    };

    quote! {
        #input
        #alias
        #module
    }
}

/// `task(..)`: builds an invocation from values or proxies.
fn task_fn(task: &Task<'_>) -> TokenStream {
    let builder = Ident::new("__builder", Span::mixed_site());
    let result = &task.output.ty;
    let result_listed = task.output.listed;
    let idents: Vec<&Ident> = task.params.iter().map(|p| &p.ident).collect();
    let tys: Vec<_> = task.params.iter().map(|p| &p.ty).collect();
    let listed = task.params.iter().map(|p| p.listed);
    // Without arguments nothing mutates the builder, and `mut` would warn.
    let mutability = (!task.params.is_empty()).then(|| quote!(mut));
    let assertions = assertions(task);
    quote! {
        pub fn task(
            #(#idents: impl ::proxystore::IntoArg<#tys>),*
        ) -> ::proxystore::Task<#result> {
            #(#assertions;)*
            // `self::`: a parameter may be called `NAME`.
            let #mutability #builder = ::proxystore::__private::TaskBuilder::<#result>::new(
                self::NAME,
                self::__run,
                #result_listed,
            );
            #(
                #builder.arg::<#tys>(::proxystore::IntoArg::into_arg(#idents), #listed);
            )*
            #builder.finish()
        }
    }
}

/// `__run(..)`: what a worker calls, found by name; decodes the arguments,
/// calls the fn and hands its result to the runtime.
fn run_fn(task: &Task<'_>, at_module_level: &Ident) -> TokenStream {
    let ctx = Ident::new("__ctx", Span::mixed_site());
    let args = Ident::new("__args", Span::mixed_site());
    let value = Ident::new("__value", Span::mixed_site());
    let error = Ident::new("__error", Span::mixed_site());
    let vars: Vec<Ident> = (0..task.params.len())
        .map(|index| format_ident!("__arg{}", index, span = Span::mixed_site()))
        .collect();
    let tys: Vec<_> = task.params.iter().map(|p| &p.ty).collect();
    let result = &task.output.ty;
    let result_listed = task.output.listed;
    let assertions = assertions(task);

    let ident = task.ident;
    let function = quote_spanned!(ident.span()=> super::#at_module_level);
    let call = quote!(#function(#(#vars),*));
    let finish = match &task.output.fallible {
        None => quote! {
            ::proxystore::__private::output::<#result>(#ctx, #call, #result_listed)
        },
        Some(fallible) => {
            // At `E`, so "`E` doesn't implement `Display`" points at it; with
            // the hygiene of the `__error` binding, so it still resolves.
            let at_error_type = Span::mixed_site().located_at(fallible.error_span);
            let error_at_type = Ident::new("__error", at_error_type);
            let fail = quote_spanned! {at_error_type=>
                ::proxystore::__private::fail(&#error_at_type)
            };
            quote! {
                match #call {
                    ::core::result::Result::Ok(#value) => {
                        ::proxystore::__private::output::<#result>(#ctx, #value, #result_listed)
                    }
                    ::core::result::Result::Err(#error) => ::core::result::Result::Err(#fail),
                }
            }
        }
    };
    quote! {
        #[doc(hidden)]
        pub fn __run(
            #ctx: &::proxystore::__private::WorkerContext,
            #args: &mut ::proxystore::__private::ArgReader<'_>,
        ) -> ::core::result::Result<
            ::proxystore::__private::TaskOutput,
            ::proxystore::__private::TaskFailure,
        > {
            #(#assertions;)*
            #(
                let #vars: #tys = #args.next::<#tys>()?;
            )*
            #finish
        }
    }
}

/// `assert_storable::<T>()` for each listed type and for the type of each
/// other parameter and of an unlisted result, each at that type (a listed
/// parameter or result is named by the listed tokens). They open `task` and
/// `__run`: a type that is not storable also fails the bounds of the calls
/// that follow, but at the same place and for the same reason, so rustc
/// reports it once, at the type, instead of once per call.
fn assertions(task: &Task<'_>) -> Vec<TokenStream> {
    let listed = task.listed.iter().map(|l| (&l.ty, l.written.span()));
    let params = task
        .params
        .iter()
        .filter(|p| !p.listed)
        .map(|p| (&p.ty, p.ty.span()));
    let output = &task.output;
    let result = (!output.listed).then(|| (&output.ty, output.ty.span()));
    listed
        .chain(params)
        .chain(result)
        .map(|(ty, span)| assertion(ty, span))
        .collect()
}

fn assertion(ty: &syn::Type, span: Span) -> TokenStream {
    quote_spanned! {span=>
        ::proxystore::__private::assert_storable::<#ty>()
    }
}

/// The doc comments of the generated items, which users read in rustdoc and
/// in their IDE.
struct Docs {
    module: String,
    name: String,
    task: String,
}

impl Docs {
    fn new(task: &Task<'_>) -> Self {
        let fn_name = task.ident.to_string();
        let fn_name = fn_name.trim_start_matches("r#");
        let module = format!(
            " Task wrapper generated by `#[proxied]` for [`{fn_name}`](fn@{fn_name}): \
             build invocations with [`task`]({fn_name}::task)."
        );
        let name = match &task.name {
            Some(name) => format!(
                " Name under which workers find this task: `{:?}`, from `#[proxied(name = ..)]`.",
                name.value()
            ),
            None => format!(
                " Name under which workers find this task: the module path of \
                 [`{fn_name}`](fn@super::{fn_name})."
            ),
        };

        let mut by_reference: Vec<String> = task
            .params
            .iter()
            .filter(|p| p.listed)
            .map(|p| format!("`{}`", p.ident))
            .collect();
        if task.output.listed {
            by_reference.push("the result".to_owned());
        }
        let policy = if by_reference.is_empty() {
            " Nothing is listed in `types = [..]`, so the executor's runtime policy \
             decides what travels by reference."
                .to_owned()
        } else {
            format!(
                " Always put in the store and passed by reference (their types are listed in \
                 `types = [..]`): {}. Everything else is left to the executor's runtime policy.",
                by_reference.join(", ")
            )
        };
        let task_doc = format!(
            " Builds an invocation of [`{fn_name}`](fn@super::{fn_name}) to submit to an \
             executor.\n\n Each argument is a value or a proxy of one (anything that \
             implements `IntoArg`); a proxy is passed on as it is.\n\n{policy}"
        );
        Docs {
            module,
            name,
            task: task_doc,
        }
    }
}
