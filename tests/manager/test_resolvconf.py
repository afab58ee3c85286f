from nsmd.manager.chain import Chain
from nsmd.manager.resolvconf import ResolvConf
from nsmd.model import DNSConfig, Mechanism


def dns_request(make_request, conn_id, netns, server=None, domain="vl3"):
    req = make_request(conn_id)
    req.mechanism_preferences = [Mechanism(type="KERNEL", parameters={"netns": netns})]
    if server:
        req.connection.context.dns_context.configs = [DNSConfig([server], [domain])]
    return req


async def test_the_namespace_uses_its_vwires_dns_until_they_close(tmp_path, make_request):
    element = ResolvConf(str(tmp_path))
    chain = Chain(element)
    a = await chain.request(dns_request(make_request, "a", "ns1", "100.64.0.1", "vl3"))
    b = await chain.request(dns_request(make_request, "b", "ns1", "100.64.9.1", "other"))
    await chain.request(dns_request(make_request, "c", "ns1"))  # no DNS: changes nothing
    text = (tmp_path / "ns1" / "resolv.conf").read_text()
    assert "nameserver 100.64.0.1\nnameserver 100.64.9.1\nsearch vl3 other\n" in text
    await chain.close(a)
    text = (tmp_path / "ns1" / "resolv.conf").read_text()
    assert "100.64.0.1" not in text and "search other\n" in text
    await chain.close(b)
    assert not (tmp_path / "ns1").exists()  # undone on close


async def test_a_file_nsmd_did_not_write_is_left_alone(tmp_path, make_request):
    (tmp_path / "ns1").mkdir()
    (tmp_path / "ns1" / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    chain = Chain(ResolvConf(str(tmp_path)))
    conn = await chain.request(dns_request(make_request, "a", "ns1", "100.64.0.1"))
    await chain.close(conn)
    assert (tmp_path / "ns1" / "resolv.conf").read_text() == "nameserver 192.0.2.1\n"


async def test_path_namespaces_get_no_file(tmp_path, make_request):
    chain = Chain(ResolvConf(str(tmp_path)))
    await chain.request(dns_request(make_request, "a", "/proc/1/ns/net", "100.64.0.1"))
    assert list(tmp_path.iterdir()) == []
