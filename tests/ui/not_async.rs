use tower_wamp::rpc;

#[rpc("http://example.com/api#sync")]
fn sync() -> i64 {
    1
}

fn main() {}
