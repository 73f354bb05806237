//! Expansion tests on `proc_macro2` tokens. How the diagnostics read in a
//! real build is pinned by the trybuild cases in `ui-tests/`.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::{Item, ItemMod};

fn expand(args: TokenStream, item: TokenStream) -> syn::File {
    let output = crate::expand(args, item);
    syn::parse2(output.clone()).unwrap_or_else(|e| panic!("{e}: {output}"))
}

/// The messages of the `compile_error!`s in an expansion.
fn errors(args: TokenStream, item: TokenStream) -> Vec<String> {
    expand(args, item)
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Macro(m) if m.mac.path.segments.last().unwrap().ident == "compile_error" => Some(
                syn::parse2::<syn::LitStr>(m.mac.tokens.clone())
                    .unwrap()
                    .value(),
            ),
            _ => None,
        })
        .collect()
}

fn one_error(args: TokenStream, item: TokenStream) -> String {
    let mut errors = errors(args, item);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.remove(0)
}

fn task_module(file: &syn::File) -> &ItemMod {
    file.items
        .iter()
        .find_map(|item| match item {
            Item::Mod(m) => Some(m),
            _ => None,
        })
        .expect("a module")
}

fn text(tokens: impl ToTokens) -> String {
    tokens.to_token_stream().to_string()
}

#[test]
fn keeps_the_fn_and_adds_a_module_beside_it() {
    let item = quote! {
        /// Joins.
        #[inline]
        pub fn concat(base: String, mut num: i64) -> String { num += 1; format!("{base}-{num}") }
    };
    let file = expand(quote!(types = [String]), item.clone());
    assert_eq!(text(&file.items[0]), text(&item));
    assert!(errors(quote!(types = [String]), item).is_empty());

    let module = task_module(&file);
    assert_eq!(module.ident, "concat");
    assert_eq!(text(&module.vis), "pub");
    let body = text(module);
    for expected in [
        "use super :: * ;",
        "pub const NAME : & str = :: core :: module_path ! () ;",
        "pub fn task (base : impl :: proxystore :: IntoArg < String > , \
         num : impl :: proxystore :: IntoArg < i64 >) -> :: proxystore :: Task < String >",
        ":: proxystore :: __private :: TaskBuilder :: < String > :: new (self :: NAME , self :: __run , true ,) ;",
        "__builder . arg :: < String > (:: proxystore :: IntoArg :: into_arg (base) , true) ;",
        "__builder . arg :: < i64 > (:: proxystore :: IntoArg :: into_arg (num) , false) ;",
        "let __arg0 : String = __args . next :: < String > () ? ;",
        "let __arg1 : i64 = __args . next :: < i64 > () ? ;",
        ":: proxystore :: __private :: output :: < String > (__ctx , \
         super :: concat_must_be_declared_at_module_level_not_inside_a_fn_body (__arg0 , __arg1) , true)",
        ":: proxystore :: __private :: TaskEntry :: new (NAME , __run , :: core :: file ! () , :: core :: line ! ())",
        "const _ : () = :: proxystore :: __private :: assert_storable :: < String > () ;",
    ] {
        assert!(body.contains(expected), "missing `{expected}` in\n{body}");
    }
    // Each type is checked once per body: listed `String`, unlisted `i64`.
    let checks = ":: proxystore :: __private :: assert_storable :: < String > () ; \
                  :: proxystore :: __private :: assert_storable :: < i64 > () ; let";
    assert_eq!(body.matches(checks).count(), 2, "{body}");
    let import = text(&file.items[1]);
    assert!(import
        .ends_with("use concat as concat_must_be_declared_at_module_level_not_inside_a_fn_body ;"));
}

#[test]
fn generated_items_exist_when_the_fn_does() {
    let file = expand(
        quote!(),
        quote!(
            #[cfg(unix)]
            #[inline]
            fn f() {}
        ),
    );
    assert!(text(&file.items[1]).starts_with("# [cfg (unix)] # [doc (hidden)]"));
    assert!(text(task_module(&file)).starts_with("# [cfg (unix)] # [doc ="));
}

#[test]
fn private_fn_gets_a_private_module_and_name_override() {
    let file = expand(
        quote!(name = "jobs.nothing",),
        quote!(
            pub(crate) fn nothing() {}
        ),
    );
    let module = task_module(&file);
    assert_eq!(text(&module.vis), "pub (crate)");
    let body = text(module);
    assert!(
        body.contains("pub const NAME : & str = \"jobs.nothing\" ;"),
        "{body}"
    );
    assert!(
        body.contains("pub fn task () -> :: proxystore :: Task < () >"),
        "{body}"
    );
    assert!(body.contains("let __builder ="), "{body}");
    assert!(
        body.contains("TaskBuilder :: < () > :: new (self :: NAME , self :: __run , false ,)"),
        "{body}"
    );

    let file = expand(
        quote!(),
        quote!(
            fn private() {}
        ),
    );
    assert_eq!(text(&task_module(&file).vis), "");
}

#[test]
fn fallible_fns_return_the_ok_type() {
    for (returned, ok) in [
        (quote!(Result<u64, String>), "u64"),
        (quote!(std::io::Result<Vec<u8>>), "Vec < u8 >"),
        (quote!(anyhow::Result<()>), "()"),
    ] {
        let file = expand(quote!(), quote!(fn f(x: u64) -> #returned { todo!() }));
        let body = text(task_module(&file));
        assert!(
            body.contains(&format!("-> :: proxystore :: Task < {ok} >")),
            "{body}"
        );
        assert!(
            body.contains(
                "match super :: f_must_be_declared_at_module_level_not_inside_a_fn_body (__arg0)"
            ),
            "{body}"
        );
        assert!(
            body.contains(":: core :: result :: Result :: Err (__error) => :: core :: result :: Result :: Err (:: proxystore :: __private :: fail (& __error))"),
            "{body}"
        );
    }
    // Not a `Result` with a type argument: the value is the result.
    let file = expand(
        quote!(),
        quote!(
            fn f() -> Result {
                todo!()
            }
        ),
    );
    assert!(text(task_module(&file)).contains("Task < Result >"));
}

#[test]
fn listed_result_and_wildcard_params() {
    let file = expand(
        quote!(types = [Vec<f64>]),
        quote!(
            fn f(_: u8, x: Vec<f64>) -> std::io::Result<Vec<f64>> {
                todo!()
            }
        ),
    );
    let body = text(task_module(&file));
    assert!(body.contains("pub fn task (__arg0 : impl"), "{body}");
    assert!(
        body.contains(
            "TaskBuilder :: < Vec < f64 > > :: new (self :: NAME , self :: __run , true ,)"
        ),
        "{body}"
    );
    assert!(body.contains("into_arg (x) , true)"), "{body}");
}

#[test]
fn relative_paths_are_named_from_inside_the_module() {
    let file = expand(
        quote!(types = [self::Matrix]),
        quote!(
            fn f(m: self::Matrix, n: super::Other) -> crate::Out {
                todo!()
            }
        ),
    );
    let body = text(task_module(&file));
    assert!(body.contains("IntoArg < super :: Matrix >"), "{body}");
    assert!(
        body.contains("IntoArg < super :: super :: Other >"),
        "{body}"
    );
    assert!(body.contains("Task < crate :: Out >"), "{body}");
    assert!(
        body.contains("assert_storable :: < super :: Matrix >"),
        "{body}"
    );
}

#[test]
fn rejects_what_cannot_be_a_task() {
    let cases = [
        (
            quote!(
                struct S;
            ),
            "can only be applied to a free function",
        ),
        (quote!(impl S {}), "can only be applied to a free function"),
        (
            quote!(
                async fn f() {}
            ),
            "does not support `async fn` yet",
        ),
        (
            quote!(
                const fn f() {}
            ),
            "does not support `const fn`",
        ),
        (
            quote!(
                unsafe fn f() {}
            ),
            "`unsafe fn`",
        ),
        (
            quote!(
                extern "C" fn f() {}
            ),
            "must use the Rust ABI",
        ),
        (
            quote!(
                fn f<T>(x: T) {}
            ),
            "cannot be generic",
        ),
        (
            quote!(
                fn f<'a>(x: Cow<'a, str>) {}
            ),
            "cannot be generic",
        ),
        (
            quote!(
                fn f()
                where
                    String: Clone,
                {
                }
            ),
            "cannot be generic",
        ),
        (
            quote!(
                fn f(&self) {}
            ),
            "cannot be applied to a method",
        ),
        (
            quote!(
                fn f((a, b): (i32, i32)) {}
            ),
            "must be plain names",
        ),
        (
            quote!(
                fn f(x: impl Clone) {}
            ),
            "cannot be `impl Trait`",
        ),
        (
            quote!(
                fn f() -> impl Clone {}
            ),
            "cannot return `impl Trait`",
        ),
        (
            quote!(
                fn f(x: &str) {}
            ),
            "take `String` instead of `&str`",
        ),
        (
            quote!(
                fn f(x: Vec<&[u8]>) {}
            ),
            "take `Vec<u8>` instead of `&[u8]`",
        ),
        (
            quote!(
                fn f() -> &'static str {}
            ),
            "return `String` instead of `&'static str`",
        ),
        (
            quote!(
                fn f(x: Self) {}
            ),
            "`Self` only has a meaning",
        ),
        (
            quote!(
                fn f(#[cfg(test)] x: i32) {}
            ),
            "cannot be conditional",
        ),
        (
            quote!(
                fn f() -> ! {}
            ),
            "never finishes",
        ),
    ];
    for (item, expected) in cases {
        let message = one_error(quote!(), item.clone());
        assert!(message.contains(expected), "{item}: {message}");
    }
}

#[test]
fn checks_listed_types() {
    let message = one_error(
        quote!(types = [Vec<f64>]),
        quote!(
            fn f(x: Vec<f32>) {}
        ),
    );
    assert!(message.starts_with("`Vec<f64>` is listed in `types` but no parameter"));
    let message = one_error(
        quote!(types = [std::vec::Vec<f64>]),
        quote!(
            fn f(x: Vec<f64>) {}
        ),
    );
    assert!(
        message.contains("the signature writes `Vec<f64>`"),
        "{message}"
    );
    let message = one_error(
        quote!(types = [u8, u8]),
        quote!(
            fn f(x: u8) {}
        ),
    );
    assert_eq!(message, "`u8` is listed twice in `types`");
    let message = one_error(
        quote!(types = [Result<u8, String>]),
        quote!(
            fn f() -> Result<u8, String> {
                todo!()
            }
        ),
    );
    assert!(message.contains("list `u8` instead"), "{message}");
}

#[test]
fn reports_every_mistake_and_keeps_the_fn() {
    let item = quote!(
        pub async fn f<T>(x: &str, (a, b): (u8, u8)) -> T {
            todo!()
        }
    );
    let errors = errors(quote!(types = [String], types = [u8]), item.clone());
    assert_eq!(errors.len(), 6, "{errors:#?}");
    assert!(errors[0].contains("single `types`"), "{errors:#?}");
    assert!(errors[5].starts_with("`String` is listed"), "{errors:#?}");

    let file = expand(quote!(kind = 1), item.clone());
    assert_eq!(text(&file.items[0]), text(&item));
    // The stand-in keeps `f::task(..)` calls type-checking.
    let body = text(task_module(&file));
    assert!(body.contains("pub fn task (_ : impl :: core :: marker :: Sized , _ : impl :: core :: marker :: Sized) -> !"), "{body}");

    let file = expand(
        quote!(name = ""),
        quote!(
            fn g(x: String) -> String {
                x
            }
        ),
    );
    let body = text(task_module(&file));
    assert!(
        body.contains("-> :: proxystore :: Task < String >"),
        "{body}"
    );

    // No module can stand in for a method.
    let file = expand(
        quote!(),
        quote!(
            fn m(&self) {}
        ),
    );
    assert!(file.items.iter().all(|item| !matches!(item, Item::Mod(_))));
}
