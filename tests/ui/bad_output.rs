use tower_wamp::rpc;

struct NotSerializable;

#[rpc("http://example.com/api#thing")]
async fn thing() -> NotSerializable {
    NotSerializable
}

fn main() {}
