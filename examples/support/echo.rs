//! The handler of `examples/echo.rs`, shared with the conformance tests so
//! that they test exactly the server the example runs.

use shardcast::{Handler, Message, Rejection, UpgradeRequest, Ws};

/// Every text or binary message comes back as it was sent.
pub struct Echo;

impl Handler for Echo {
    type Data = ();
    type Local = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        match msg {
            Message::Text(t) => ws.send_text(t),
            Message::Binary(b) => ws.send_binary(b),
        };
    }
}
