//! The argument grammar of `#[proxied(...)]`:
//!
//! ```text
//! args  := (arg ("," arg)* ","?)?
//! arg   := "types" "=" "[" (Type ("," Type)* ","?)? "]"
//!        | "name" "=" LitStr
//! ```

use proc_macro2::Ident;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{bracketed, token, LitStr, Token, Type};

use crate::valid::Errors;

mod kw {
    syn::custom_keyword!(types);
    syn::custom_keyword!(name);
}

/// The arguments of one `#[proxied(...)]`; each is optional.
#[derive(Default)]
pub(crate) struct Args {
    /// `types = [..]`: values of these types always travel through the store.
    pub(crate) types: Vec<Type>,
    /// `name = ".."`: registers the task under this name instead of its module path.
    pub(crate) name: Option<LitStr>,
    /// Mistakes that left the rest readable (a repeated argument, an empty
    /// name): reported along with the checks that use the rest.
    pub(crate) errors: Errors,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        let mut errors = Errors::default();
        // A mistake inside one argument does not hide the others: only tokens
        // we cannot find the end of (an unknown argument, a missing `,`) stop
        // the loop and discard the arguments.
        match parse_args(input, &mut args, &mut errors) {
            Ok(()) => {
                args.errors = errors;
                Ok(args)
            }
            Err(error) => Err(errors.fail(error)),
        }
    }
}

fn parse_args(input: ParseStream<'_>, args: &mut Args, errors: &mut Errors) -> syn::Result<()> {
    let mut seen_types = false;
    while !input.is_empty() {
        let lookahead = input.lookahead1();
        if lookahead.peek(kw::types) {
            let keyword: kw::types = input.parse()?;
            input.parse::<Token![=]>()?;
            let types = parse_type_list(input)?;
            if seen_types {
                errors.push(syn::Error::new_spanned(
                    keyword,
                    "expected only a single `types` argument: list every type in one `types = [..]`",
                ));
            } else {
                seen_types = true;
                args.types = types;
            }
        } else if lookahead.peek(kw::name) {
            let keyword: kw::name = input.parse()?;
            input.parse::<Token![=]>()?;
            let name = parse_name(input)?;
            if args.name.is_some() {
                errors.push(syn::Error::new_spanned(
                    keyword,
                    "expected only a single `name` argument",
                ));
            } else if name.value().is_empty() {
                errors.push(syn::Error::new_spanned(
                    &name,
                    "the task name must not be empty: give a name such as `name = \"my.task\"`, \
                     or remove `name` to use the fn's module path",
                ));
            } else {
                args.name = Some(name);
            }
        } else if input.peek(Ident::peek_any) {
            let unknown = input.call(Ident::parse_any)?;
            return Err(syn::Error::new_spanned(
                &unknown,
                format!(
                    "unknown #[proxied] argument `{unknown}`: the known arguments are \
                     `types = [Type, ..]` and `name = \"..\"`"
                ),
            ));
        } else {
            return Err(lookahead.error());
        }
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(())
}

/// `[String, Vec<f64>]`, with an optional trailing comma.
fn parse_type_list(input: ParseStream<'_>) -> syn::Result<Vec<Type>> {
    if !input.peek(token::Bracket) {
        return Err(input.error(
            "expected a list of types in square brackets, like `types = [String, Vec<f64>]`",
        ));
    }
    let content;
    bracketed!(content in input);
    let mut types = Vec::new();
    while !content.is_empty() {
        let ty = content.parse::<Type>().map_err(|error| {
            syn::Error::new(
                error.span(),
                "expected a type, like `types = [String, Vec<f64>]`",
            )
        })?;
        types.push(ty);
        if content.is_empty() {
            break;
        }
        content.parse::<Token![,]>()?;
    }
    Ok(types)
}

fn parse_name(input: ParseStream<'_>) -> syn::Result<LitStr> {
    if input.peek(LitStr) {
        input.parse()
    } else {
        Err(input.error("expected a string literal, like `name = \"my.task\"`"))
    }
}

#[cfg(test)]
mod tests {
    use super::Args;
    use quote::ToTokens;

    fn parse(tokens: &str) -> syn::Result<Args> {
        syn::parse_str(tokens)
    }

    fn message(tokens: &str) -> String {
        let error = match parse(tokens) {
            Ok(args) => match args.errors.finish() {
                Ok(()) => panic!("`{tokens}` parsed"),
                Err(error) => error,
            },
            Err(error) => error,
        };
        error
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(" | ")
    }

    #[test]
    fn accepts_every_form() {
        let args = parse("").unwrap();
        assert!(args.types.is_empty() && args.name.is_none());
        assert!(args.errors.finish().is_ok());

        let args = parse(r#"name = "a.b", types = [String, Vec<f64>,],"#).unwrap();
        assert_eq!(args.name.unwrap().value(), "a.b");
        let types: Vec<String> = args
            .types
            .iter()
            .map(|t| t.to_token_stream().to_string())
            .collect();
        assert_eq!(types, ["String", "Vec < f64 >"]);

        assert!(parse("types = []").unwrap().types.is_empty());
    }

    #[test]
    fn reports_mistakes() {
        assert!(message("kind = 1").contains("unknown #[proxied] argument `kind`"));
        assert!(message("types = [String], types = [i64]")
            .starts_with("expected only a single `types` argument"));
        assert!(message("types = String").contains("square brackets"));
        assert!(message("types = [String,, ]").starts_with("expected a type"));
        assert!(message("types = [1]").starts_with("expected a type"));
        assert!(message("name = \"\"").contains("must not be empty"));
        assert!(message("name = x").contains("string literal"));
        assert!(message("types = [String] name = \"x\"").contains("expected `,`"));
    }

    #[test]
    fn reports_every_recoverable_mistake() {
        let all = message(r#"name = "", types = [A], types = [B], kind"#);
        assert!(all.contains("must not be empty"), "{all}");
        assert!(all.contains("single `types`"), "{all}");
        assert!(all.contains("unknown #[proxied] argument `kind`"), "{all}");

        // Recoverable mistakes keep what was read.
        let args = parse(r#"name = "", types = [A], types = [B]"#).unwrap();
        assert_eq!(args.types.len(), 1);
        assert!(args.errors.finish().is_err());
    }
}
