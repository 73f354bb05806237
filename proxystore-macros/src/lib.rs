//! The `#[proxied]` attribute of the `proxystore` crate, which re-exports it
//! as `proxystore::proxied`.

mod ast;
mod attr;
mod expand;
mod fallback;
mod ty;
mod valid;

use proc_macro2::TokenStream;

#[doc = include_str!("proxied.md")]
#[proc_macro_attribute]
pub fn proxied(
    args: proc_macro::TokenStream,
    input: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    expand(args.into(), input.into()).into()
}

/// Parses, checks, then generates; on any mistake, the fallback.
fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let args = syn::parse2::<attr::Args>(args);
    let item = match syn::parse2::<syn::Item>(input.clone()) {
        Ok(item) => item,
        Err(error) => return fallback::expand(&input, None, error),
    };
    match ast::Task::from_syn(args, &item) {
        Ok(task) => expand::task(&input, &task),
        Err(error) => fallback::expand(&input, Some(&item), error),
    }
}

#[cfg(test)]
mod tests;
