//! The namespace guard itself: created, usable, and gone after drop (also after a panic).

use msfilter_testbed::netns::{Link, Netns};

#[test]
fn namespace_is_deleted_on_drop_and_on_panic() {
    let ns = Netns::new("guard").unwrap();
    let path = ns.path();
    assert!(path.exists());
    drop(ns);
    assert!(!path.exists(), "{} still exists after drop", path.display());

    let path = std::panic::catch_unwind(|| {
        let ns = Netns::new("panic").unwrap();
        let p = ns.path();
        std::panic::panic_any(p);
    })
    .unwrap_err()
    .downcast::<std::path::PathBuf>()
    .unwrap();
    assert!(
        !path.exists(),
        "{} still exists after a panic",
        path.display()
    );
}

#[test]
fn link_connects_two_namespaces() {
    let link = Link::new("lnk", &["10.99.0.1/24", "fd99::1/64"]).unwrap();
    let rx = link.receiver.ifindex(&link.rx).unwrap();
    assert!(rx > 0);
    // A datagram from the sender reaches the receiver.
    let socket = link
        .receiver
        .run(|| std::net::UdpSocket::bind("10.99.0.2:5000").unwrap());
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    link.sender.run(|| {
        let tx = std::net::UdpSocket::bind("10.99.0.1:0").unwrap();
        tx.send_to(b"hello", "10.99.0.2:5000").unwrap();
    });
    let mut buf = [0u8; 16];
    let (n, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from.ip().to_string(), "10.99.0.1");
    // The receiver's interface is not visible from the sender's namespace.
    assert!(link.sender.ifindex(&link.rx).is_err());
}
