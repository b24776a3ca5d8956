//! RPC handlers: `async fn`s whose arguments are extractors and whose output becomes a
//! CALLRESULT or CALLERROR.

use std::{future::Future, pin::Pin};

use serde::Serialize;
use serde_json::Value;

use crate::{Call, FromCall, RpcError};

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a handler returns: turned into a CALLRESULT (`Ok`) or CALLERROR (`Err`).
///
/// Implemented for every `T: Serialize` (sent as the result) and for
/// `Result<T: Serialize, E: Into<RpcError>>`. The marker `M` keeps the two apart; a
/// `Result` whose error type is itself `Serialize` and `Into<RpcError>` is ambiguous and
/// needs the marker spelled out, so keep error types non-serializable.
///
/// ```
/// use tower_wamp::{IntoCallResult, RpcError};
/// use serde_json::json;
///
/// assert_eq!(IntoCallResult::into_call_result(42), Ok(json!(42)));
/// let err: Result<i32, RpcError> = Err(RpcError::generic());
/// assert_eq!(err.into_call_result(), Err(RpcError::generic()));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the output of a WAMP RPC handler",
    note = "return a value that implements `serde::Serialize`, or `Result<T, E>` with `T: Serialize` and `E: Into<RpcError>`"
)]
pub trait IntoCallResult<M> {
    /// The result value or the error.
    ///
    /// # Errors
    /// The handler's error, or an internal error if the value does not serialize.
    fn into_call_result(self) -> Result<Value, RpcError>;
}

/// Marker for plain serializable outputs.
#[derive(Debug)]
#[doc(hidden)]
pub enum Plain {}

/// Marker for `Result` outputs.
#[derive(Debug)]
#[doc(hidden)]
pub enum Fallible {}

fn to_result_value<T: Serialize + 'static>(value: T) -> Result<Value, RpcError> {
    // A `Value` is the result as it is: moved, not serialized into a copy.
    let mut slot = Some(value);
    if let Some(value) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<Value>>() {
        return Ok(value.take().unwrap_or_default());
    }
    let Some(value) = slot else {
        return Ok(Value::Null);
    };
    serde_json::to_value(value)
        .map_err(|e| RpcError::internal(format!("the result does not serialize: {e}")))
}

impl<T: Serialize + 'static> IntoCallResult<Plain> for T {
    fn into_call_result(self) -> Result<Value, RpcError> {
        to_result_value(self)
    }
}

impl<T: Serialize + 'static, E: Into<RpcError>> IntoCallResult<Fallible> for Result<T, E> {
    fn into_call_result(self) -> Result<Value, RpcError> {
        self.map_err(Into::into).and_then(to_result_value)
    }
}

/// An RPC handler: implemented for `async fn`s (and closures returning futures) of up to
/// 12 arguments that all implement [`FromCall<S>`], whose output implements
/// [`IntoCallResult`].
///
/// ```
/// use tower_wamp::{Args, RpcError, Session, WampRouter};
///
/// async fn add(Args(numbers): Args<Vec<f64>>) -> f64 { numbers.iter().sum() }
/// async fn whoami(session: Session) -> String { session.id().to_string() }
/// async fn fails() -> Result<(), RpcError> { Err(RpcError::new("http://example.com/error#nope", "nope")) }
///
/// let router: WampRouter = WampRouter::new()
///     .rpc("http://example.com/api#add", add)
///     .rpc("http://example.com/api#whoami", whoami)
///     .rpc("http://example.com/api#fails", fails)
///     .rpc("http://example.com/api#closure", |Args((x,)): Args<(i64,)>| async move { x * 2 });
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a WAMP RPC handler",
    label = "not an RPC handler",
    note = "an RPC handler is an `async fn` (or a `Clone + Send + Sync` closure returning a `Send` future) with at most 12 arguments, each implementing `FromCall<S>` (`Args<T>`, `Session`, `State<T>`, ...), returning `T: Serialize` or `Result<T: Serialize, E: Into<RpcError>>`"
)]
pub trait RpcHandler<T, S>: Clone + Send + Sync + Sized + 'static {
    /// Runs the handler on a call.
    fn call(
        self,
        call: Call,
        state: S,
    ) -> Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>>;
}

macro_rules! impl_rpc_handler {
    // No argument.
    () => {
        #[diagnostic::do_not_recommend]
        impl<F, Fut, S, R, M> RpcHandler<(M,), S> for F
        where
            F: FnOnce() -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send,
            R: IntoCallResult<M>,
            S: Send + Sync + 'static,
        {
            fn call(self, _call: Call, _state: S) -> Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>> {
                Box::pin(async move { self().await.into_call_result() })
            }
        }
    };
    // Every argument but the last takes the call by reference; the last takes it whole
    // (`FromCall::from_call_owned`: `Args` deserializes the arguments by value).
    ( $($ty:ident),* ; $last:ident ) => {
        #[diagnostic::do_not_recommend]
        impl<F, Fut, S, R, M, $($ty,)* $last> RpcHandler<(M, $($ty,)* $last,), S> for F
        where
            F: FnOnce($($ty,)* $last) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send,
            R: IntoCallResult<M>,
            S: Send + Sync + 'static,
            $( $ty: FromCall<S> + Send, )*
            $last: FromCall<S> + Send,
        {
            #[allow(non_snake_case, unused_variables)]
            fn call(self, call: Call, state: S) -> Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>> {
                Box::pin(async move {
                    $(
                        let $ty = $ty::from_call(&call, &state).await.map_err(Into::into)?;
                    )*
                    let $last = $last::from_call_owned(call, &state).await.map_err(Into::into)?;
                    self($($ty,)* $last).await.into_call_result()
                })
            }
        }
    };
}

impl_rpc_handler!();
impl_rpc_handler!(; T1);
impl_rpc_handler!(T1; T2);
impl_rpc_handler!(T1, T2; T3);
impl_rpc_handler!(T1, T2, T3; T4);
impl_rpc_handler!(T1, T2, T3, T4; T5);
impl_rpc_handler!(T1, T2, T3, T4, T5; T6);
impl_rpc_handler!(T1, T2, T3, T4, T5, T6; T7);
impl_rpc_handler!(T1, T2, T3, T4, T5, T6, T7; T8);
impl_rpc_handler!(T1, T2, T3, T4, T5, T6, T7, T8; T9);
impl_rpc_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9; T10);
impl_rpc_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10; T11);
impl_rpc_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11; T12);
