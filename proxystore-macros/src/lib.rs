//! The `#[proxied]` attribute of the `proxystore` crate, which re-exports it
//! as `proxystore::proxied`.

mod ast;
mod attr;
mod context;
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
    if let syn::Item::Fn(func) = &item {
        // A method (with `self`) gets its own message from the checks.
        let method = func.sig.receiver().is_some();
        if let Some(block) = (!method)
            .then(|| context::enclosing_block(&func.sig.ident))
            .flatten()
        {
            let ident = &func.sig.ident;
            let article = if block == "impl" { "an" } else { "a" };
            let message = format!(
                "#[proxied] works on free functions at module level, and `{ident}` is inside \
                 {article} `{block}` block: workers find a task by a path that only a free \
                 function has. Move `{ident}` out of the `{block}` block (its methods can still \
                 call it), or put #[proxied] on a free function that calls `Self::{ident}`."
            );
            // Nothing else is emitted: no module can live in this block.
            return fallback::expand(&input, None, syn::Error::new(ident.span(), message));
        }
    }
    match ast::Task::from_syn(args, &item) {
        Ok(task) => expand::task(&input, &task),
        Err(error) => fallback::expand(&input, Some(&item), error),
    }
}

#[cfg(test)]
mod tests;
