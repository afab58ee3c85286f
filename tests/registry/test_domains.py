import pytest

from nsmd.domains import Domains, load_table, split
from nsmd.errors import NotFound, ValidationError
from nsmd.model import NetworkServiceEndpoint, ServiceLabels
from nsmd.registry.foreign import localize_endpoint, qualify_endpoint


def test_names_of_other_domains_and_our_own():
    d = Domains("a.test")
    assert split("svc@b.test") == ("svc", "b.test") and split("svc") == ("svc", "")
    assert d.foreign("svc@b.test") == "b.test"
    assert d.foreign("svc@a.test") == "" and d.foreign("svc") == ""
    assert d.localize("svc@a.test") == "svc" and d.localize("svc@b.test") == "svc@b.test"


def test_records_are_qualified_and_localized_both_ways():
    nse = NetworkServiceEndpoint(name="e", network_service_names=["svc"], url="https://x",
                                 network_service_labels={"svc": ServiceLabels({"k": "v"})})
    qualified = qualify_endpoint(nse, "b.test")
    assert qualified.name == "e@b.test" and qualified.network_service_names == ["svc@b.test"]
    assert qualified.labels_for("svc@b.test") == {"k": "v"} and qualified.url == "https://x"
    assert localize_endpoint(qualified, "b.test") == nse


def test_the_domains_file(tmp_path):
    good = tmp_path / "d.toml"
    good.write_text('"b.test" = "https://192.0.2.2:7000"\n'
                    '"c.test" = {url = "https://192.0.2.3:7000", trust_domain = "c.org"}\n')
    table = load_table(str(good))
    assert table == {"b.test": ("https://192.0.2.2:7000", "b.test"),
                     "c.test": ("https://192.0.2.3:7000", "c.org")}
    domains = Domains("a.test", table)
    # the registry each domain must present an SVID of: its own name's trust domain
    # unless the file says another, also for domains found by DNS SRV
    assert [domains.registry_id(d) for d in ("b.test", "c.test", "srv.test")] == [
        "spiffe://b.test", "spiffe://c.org", "spiffe://srv.test"]
    bad = tmp_path / "bad.toml"
    bad.write_text('"b.test" = "192.0.2.2:7000"\n')
    with pytest.raises(ValidationError, match="b.test"):
        load_table(str(bad))


async def test_a_domain_nobody_knows_is_a_clear_error():
    with pytest.raises(NotFound, match="no registry in --domains and no DNS SRV"):
        await Domains("a.test").registry_url("nowhere.test")
