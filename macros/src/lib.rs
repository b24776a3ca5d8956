//! Attribute macros for [tower-wamp](https://docs.rs/tower-wamp): `#[rpc]` and `#[topic]`.
//!
//! Use them through `tower_wamp::{rpc, topic}` (the default `macros` feature); the
//! documentation with examples is there.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::{
    FnArg, Ident, ItemFn, LitStr, Path, ReturnType, Token, Type,
    parse::{Parse, ParseStream},
    spanned::Spanned,
};

/// Declares an RPC handler with its procedure URI. See `tower_wamp::rpc`.
#[proc_macro_attribute]
pub fn rpc(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_or_keep(Kind::Rpc, attr, item)
}

/// Declares a topic's broker function with its pattern and subscribe rule. See
/// `tower_wamp::topic`.
#[proc_macro_attribute]
pub fn topic(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_or_keep(Kind::Topic, attr, item)
}

/// On an error, keeps the function as written beside the error, so the error is the only
/// one (no knock-on "unused import" or "cannot find function").
fn expand_or_keep(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = TokenStream2::from(item);
    match expand(kind, attr.into(), item.clone()) {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            let error = e.into_compile_error();
            quote!(#error #item).into()
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rpc,
    Topic,
}

enum SubscribeRule {
    Allow,
    Deny,
    Predicate(Path),
}

struct Args {
    uri: LitStr,
    state: Option<Type>,
    subscribe: Option<SubscribeRule>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                "expected the URI as a string literal, e.g. #[rpc(\"http://example.com/api#add\")]",
            ));
        }
        let uri: LitStr = input.parse()?;
        let mut args = Self {
            uri,
            state: None,
            subscribe: None,
        };
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            match key.to_string().as_str() {
                "state" => args.state = Some(input.parse()?),
                "subscribe" => {
                    let path: Path = input.parse()?;
                    args.subscribe = Some(if path.is_ident("allow") {
                        SubscribeRule::Allow
                    } else if path.is_ident("deny") {
                        SubscribeRule::Deny
                    } else {
                        SubscribeRule::Predicate(path)
                    });
                }
                other => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("unknown option `{other}`: expected `state` or `subscribe`"),
                    ));
                }
            }
        }
        Ok(args)
    }
}

fn check_uri(kind: Kind, lit: &LitStr) -> syn::Result<()> {
    let uri = lit.value();
    let fail = |msg: String| Err(syn::Error::new(lit.span(), msg));
    if uri.is_empty() {
        return fail("the URI must not be empty".into());
    }
    if uri.chars().any(char::is_whitespace) {
        return fail(format!("the URI {uri:?} contains whitespace"));
    }
    match (kind, uri.find('*')) {
        (Kind::Rpc, Some(_)) => fail(format!(
            "procedure URIs are matched exactly: `*` is not allowed in {uri:?} (prefix patterns are for topics)"
        )),
        (Kind::Topic, Some(i)) if i != uri.len() - 1 => fail(format!(
            "malformed topic pattern {uri:?}: `*` may only end a pattern (a prefix match)"
        )),
        _ => Ok(()),
    }
}

fn expand(kind: Kind, attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let args: Args = syn::parse2(attr)?;
    check_uri(kind, &args.uri)?;
    let func: ItemFn = syn::parse2(item)?;
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "a WAMP handler must be an `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a WAMP handler declared with an attribute cannot be generic",
        ));
    }
    let mut arg_types = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Typed(pat) => arg_types.push((*pat.ty).clone()),
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(
                    r.span(),
                    "a WAMP handler cannot take `self`",
                ));
            }
        }
    }
    if kind == Kind::Topic && args.state.is_some() {
        return Err(syn::Error::new(
            args.uri.span(),
            "`state` is for `#[rpc]`: broker functions take `(Session, Publication)`",
        ));
    }
    if kind == Kind::Rpc && args.subscribe.is_some() {
        return Err(syn::Error::new(
            args.uri.span(),
            "`subscribe` is for `#[topic]`",
        ));
    }

    let name = &sig.ident;
    let vis = &func.vis;
    let attrs = &func.attrs;
    let inner = format_ident!("__tower_wamp_{}", name);
    let mut inner_fn = func.clone();
    inner_fn.sig.ident = inner.clone();
    inner_fn.attrs.retain(|a| !a.path().is_ident("doc"));
    inner_fn.vis = syn::Visibility::Inherited;
    let (ret_ty, ret_span) = match &sig.output {
        ReturnType::Default => (quote!(()), sig.span()),
        ReturnType::Type(_, ty) => (quote!(#ty), ty.span()),
    };
    let params: Vec<Ident> = (0..arg_types.len())
        .map(|i| format_ident!("__arg{}", i))
        .collect();
    let fn_ptr = quote! {
        fn(#(#arg_types),*) -> ::core::pin::Pin<::std::boxed::Box<
            dyn ::core::future::Future<Output = #ret_ty> + ::core::marker::Send
        >>
    };
    let uri = &args.uri;
    let krate = quote!(::tower_wamp);

    let (consts, register, checks) = match kind {
        Kind::Rpc => {
            let check_state = args
                .state
                .clone()
                .map_or_else(|| quote!(()), |s| quote!(#s));
            let arg_checks = arg_types.iter().map(|ty| {
                quote_spanned! {ty.span()=>
                    __tower_wamp_extractor::<#check_state, #ty>();
                }
            });
            let ret_check = quote_spanned! {ret_span=>
                __tower_wamp_output::<_, #ret_ty>();
            };
            let checks = quote! {
                const _: () = {
                    fn __tower_wamp_extractor<S, T: #krate::FromCall<S>>() {}
                    fn __tower_wamp_output<M, T: #krate::IntoCallResult<M>>() {}
                    #[allow(dead_code)]
                    fn __tower_wamp_checks() {
                        #(#arg_checks)*
                        #ret_check
                    }
                };
            };
            let register = match &args.state {
                Some(state) => quote! {
                    impl #krate::Route<#state> for #name {
                        fn register(self, router: #krate::WampRouter<#state>) -> #krate::WampRouter<#state> {
                            router.rpc(Self::URI, #inner)
                        }
                    }
                },
                None => quote! {
                    impl<S> #krate::Route<S> for #name
                    where
                        S: ::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static,
                        #( #arg_types: #krate::FromCall<S> + ::core::marker::Send, )*
                    {
                        fn register(self, router: #krate::WampRouter<S>) -> #krate::WampRouter<S> {
                            router.rpc(Self::URI, #inner)
                        }
                    }
                },
            };
            let consts = quote! {
                /// The procedure URI this handler is registered under.
                pub const URI: &'static str = #uri;
            };
            (consts, register, checks)
        }
        Kind::Topic => {
            if arg_types.len() != 2 {
                return Err(syn::Error::new(
                    sig.inputs.span(),
                    "a `#[topic]` broker function takes `(session: Session, publication: Publication)` and returns `Option<Publication>`",
                ));
            }
            let rule = match &args.subscribe {
                None | Some(SubscribeRule::Allow) => quote!(),
                Some(SubscribeRule::Deny) => quote!(.deny_subscribe()),
                Some(SubscribeRule::Predicate(p)) => quote!(.subscribe_if(#p)),
            };
            let checks = quote_spanned! {sig.span()=>
                const _: () = {
                    fn __tower_wamp_broker<F, Fut>(_: F)
                    where
                        F: Fn(#krate::Session, #krate::Publication) -> Fut,
                        Fut: ::core::future::Future<Output = ::core::option::Option<#krate::Publication>>,
                    {
                    }
                    #[allow(dead_code)]
                    fn __tower_wamp_checks() {
                        __tower_wamp_broker(#inner);
                    }
                };
            };
            let register = quote! {
                impl<S> #krate::Route<S> for #name
                where
                    S: ::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static,
                {
                    fn register(self, router: #krate::WampRouter<S>) -> #krate::WampRouter<S> {
                        router.topic(Self::PATTERN, #krate::Topic::new().broker(#inner) #rule)
                    }
                }
            };
            let consts = quote! {
                /// The topic pattern this broker function is registered under.
                pub const PATTERN: &'static str = #uri;
            };
            (consts, register, checks)
        }
    };

    Ok(quote! {
        #(#attrs)*
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #name;

        #[doc(hidden)]
        #[allow(non_snake_case)]
        #inner_fn

        impl #name {
            #consts
        }

        /// Calls the handler as a plain function: `name(args).await`.
        impl ::core::ops::Deref for #name {
            type Target = #fn_ptr;
            fn deref(&self) -> &Self::Target {
                fn __tower_wamp_call(#(#params: #arg_types),*) -> ::core::pin::Pin<::std::boxed::Box<
                    dyn ::core::future::Future<Output = #ret_ty> + ::core::marker::Send
                >> {
                    ::std::boxed::Box::pin(#inner(#(#params),*))
                }
                const __TOWER_WAMP_CALL: #fn_ptr = __tower_wamp_call;
                &__TOWER_WAMP_CALL
            }
        }

        #register

        #checks
    })
}
