from chalicelib.state import passwords


def test_hash_verifies_only_the_right_password():
    stored = passwords.hash_password("s3cret-pass")
    assert stored.startswith("scrypt$") and "s3cret-pass" not in stored
    assert passwords.verify_password("s3cret-pass", stored)
    assert not passwords.verify_password("s3cret-pasS", stored)


def test_hashes_are_salted():
    assert passwords.hash_password("same") != passwords.hash_password("same")


def test_malformed_stored_hash_never_verifies():
    assert not passwords.verify_password("x", "not-a-hash")
    assert not passwords.verify_password("x", "md5$1$2$3$abc$def")
