//! The `#[handler]` attribute of `bv-events-guest`. Use it through that
//! crate (`#[bv_events_guest::handler]`), which holds the bindings the
//! generated code names; its documentation has the example.
//!
//! The expansion is a plain function of `proc_macro2` token streams, so
//! the signature checks are unit-tested on the host.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType};

/// The signature every handler has, quoted in every error.
const EXPECTED: &str =
    "expected `async fn on_event(event: bv_events_guest::Event<T>) -> anyhow::Result<()>`";

/// Exports the async function it is placed on as the component's
/// `bitvelocity:events/inbound-event@0.1.0` `handle-event`.
///
/// The function takes one `bv_events_guest::Event<T>` (`T` deserializes
/// the event's `data`) and returns `anyhow::Result<()>`. Use it once per
/// component.
#[proc_macro_attribute]
pub fn handler(
    attr: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    if !attr.is_empty() {
        return Err(syn::Error::new(
            attr.span(),
            "#[bv_events_guest::handler] takes no arguments (the subscription is configured in spin.toml)",
        ));
    }
    let func: ItemFn = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("#[bv_events_guest::handler] goes on a function: {EXPECTED}"),
        )
    })?;
    check(&func)?;
    let name = &func.sig.ident;
    // Spanned at the user's function, so a wrong argument or return type
    // is reported there rather than inside the generated glue.
    let call = quote_spanned! {name.span()=>
        ::bv_events_guest::__private::dispatch(delivery, #name).await
    };
    Ok(quote! {
        #func

        const _: () = {
            #[doc(hidden)]
            pub struct __BvEventHandler;

            impl ::bv_events_guest::__bindings::exports::bitvelocity::events::inbound_event::Guest
                for __BvEventHandler
            {
                async fn handle_event(
                    delivery: ::bv_events_guest::__private::Delivery,
                ) -> ::core::result::Result<(), ::bv_events_guest::__private::HandlerError> {
                    #call
                }
            }

            ::bv_events_guest::__bindings::__export_event_handler!(
                __BvEventHandler with_types_in ::bv_events_guest::__bindings
            );
        };
    })
}

/// The checks the compiler's own errors would make obscure: they would
/// point into the generated glue instead of at the signature.
fn check(func: &ItemFn) -> syn::Result<()> {
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            format!("the event handler must be an `async fn`: {EXPECTED}"),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            format!(
                "the event handler cannot be generic (name the data type: `Event<MyData>` or `Event<serde_json::Value>`): {EXPECTED}"
            ),
        ));
    }
    if sig.inputs.len() != 1 || sig.variadic.is_some() {
        let span = if sig.inputs.is_empty() {
            sig.paren_token.span.join()
        } else {
            sig.inputs.span()
        };
        return Err(syn::Error::new(
            span,
            format!(
                "the event handler takes exactly one argument, found {}: {EXPECTED}",
                sig.inputs.len()
            ),
        ));
    }
    if let Some(FnArg::Receiver(r)) = sig.inputs.first() {
        return Err(syn::Error::new(
            r.span(),
            format!("the event handler is a free function, not a method: {EXPECTED}"),
        ));
    }
    if let ReturnType::Default = sig.output {
        return Err(syn::Error::new(
            sig.paren_token.span.join(),
            format!("the event handler must return a result: {EXPECTED}"),
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(syn::Error::new(
            abi.span(),
            format!("the event handler cannot declare an ABI: {EXPECTED}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(attr: TokenStream, item: TokenStream) -> String {
        expand(attr, item).unwrap_err().to_string()
    }

    #[test]
    fn accepts_the_documented_signature() {
        let out = expand(
            quote!(),
            quote!(
                async fn on_event(event: bv_events_guest::Event<Data>) -> anyhow::Result<()> {
                    Ok(())
                }
            ),
        )
        .unwrap()
        .to_string();
        assert!(out.contains("async fn on_event"), "{out}");
        assert!(out.contains("dispatch (delivery , on_event)"), "{out}");
        assert!(out.contains("__export_event_handler"), "{out}");
    }

    #[test]
    fn refuses_a_function_that_is_not_async() {
        let e = error(
            quote!(),
            quote!(
                fn on_event(event: Event<Value>) -> anyhow::Result<()> {
                    Ok(())
                }
            ),
        );
        assert!(
            e.starts_with("the event handler must be an `async fn`"),
            "{e}"
        );
    }

    #[test]
    fn refuses_the_wrong_number_of_arguments() {
        let e = error(
            quote!(),
            quote!(
                async fn on_event() -> anyhow::Result<()> {
                    Ok(())
                }
            ),
        );
        assert!(e.contains("exactly one argument, found 0"), "{e}");
        let e = error(
            quote!(),
            quote!(
                async fn on_event(a: Event<Value>, b: u32) -> anyhow::Result<()> {
                    Ok(())
                }
            ),
        );
        assert!(e.contains("exactly one argument, found 2"), "{e}");
    }

    #[test]
    fn refuses_methods_generics_arguments_and_missing_results() {
        let e = error(
            quote!(),
            quote!(
                async fn on_event(&self) -> anyhow::Result<()> {
                    Ok(())
                }
            ),
        );
        assert!(e.contains("not a method"), "{e}");
        let e = error(
            quote!(),
            quote!(
                async fn on_event<T>(event: Event<T>) -> anyhow::Result<()> {
                    Ok(())
                }
            ),
        );
        assert!(e.contains("cannot be generic"), "{e}");
        let e = error(
            quote!(),
            quote!(
                async fn on_event(event: Event<Value>) {}
            ),
        );
        assert!(e.contains("must return a result"), "{e}");
        let e = error(
            quote!(subscription = "x"),
            quote!(
                async fn on_event(event: Event<Value>) -> anyhow::Result<()> {
                    Ok(())
                }
            ),
        );
        assert!(e.contains("takes no arguments"), "{e}");
        let e = error(
            quote!(),
            quote!(
                struct NotAFunction;
            ),
        );
        assert!(e.contains("goes on a function"), "{e}");
    }
}
