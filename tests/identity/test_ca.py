"""`nsmd ca print|verify|renew` on an SVID directory."""

import datetime as dt
import shutil

import pytest

from nsmd.errors import ValidationError
from nsmd.identity import ca
from nsmd.identity.svid import load_svid_dir

SID = "spiffe://ca.test/node/a"


@pytest.fixture
def svid_dir(tmp_path):
    ca.init_ca(str(tmp_path / "state"), "ca.test")
    return ca.issue_svid(str(tmp_path / "state"), SID, str(tmp_path / "id"),
                         dt.timedelta(hours=30))


def test_print_and_verify_say_what_the_svid_is(svid_dir):
    lines = ca.describe_svid(svid_dir)
    assert lines[0] == f"spiffe id   {SID}" and "(30.0 h left)" in lines[2]
    assert lines[-1].startswith("bundle CA   CN=nsmd CA ca.test")
    assert ca.verify_svid(svid_dir) == f"{SID}: valid, chains to the bundle, 30.0 h left"


def test_renew_keeps_the_id_and_gives_a_fresh_lifetime(svid_dir, tmp_path):
    before = load_svid_dir(svid_dir)
    ca.renew_svid(str(tmp_path / "state"), svid_dir)
    after = load_svid_dir(svid_dir)
    assert after.spiffe_id == before.spiffe_id
    assert after.chain[0].serial_number != before.chain[0].serial_number
    assert after.not_after - before.not_after > dt.timedelta(days=80)   # 90 days by default


def test_verify_refuses_an_svid_another_ca_signed(svid_dir, tmp_path):
    ca.init_ca(str(tmp_path / "other"), "ca.test")   # same trust domain name, another CA
    shutil.copy(f"{tmp_path}/other/ca/ca.pem", f"{svid_dir}/bundle.pem")
    with pytest.raises(ValidationError, match="certificate not trusted"):
        ca.verify_svid(svid_dir)


def test_renewal_is_due_in_the_last_third_of_a_certificates_life(svid_dir):
    from nsmd.identity.identity import renewal_due

    leaf = load_svid_dir(svid_dir).chain[0]   # 30 h (and 5 min back-dated)
    end = leaf.not_valid_after_utc.timestamp()
    assert not renewal_due(leaf, end - 10.1 * 3600)
    assert renewal_due(leaf, end - 9.9 * 3600)
