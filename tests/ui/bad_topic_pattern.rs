use tower_wamp::{Publication, Session, topic};

#[topic("http://example.com/event#a*b")]
async fn chat(_s: Session, p: Publication) -> Option<Publication> {
    Some(p)
}

fn main() {}
