"""The cell config: the demo cell as the contract describes it, and a precise answer to broken files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import CellConfig, ConfigError, ConfigProblem, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "config"

# A small valid cell; each broken case below changes one thing in it.
BASE = """
pallets = ["P1", "P2"]

[cell]
name = "T"

[[stations]]
id = "L1"
kind = "load"
groups = ["LOAD"]

[[stations]]
id = "M1"
kind = "machine"
groups = ["MILL"]

[[stations]]
id = "M2"
kind = "machine"
groups = ["MILL"]

[[operations]]
code = "OP10"
name = "Load"
group = "LOAD"
kind = "load"
expected_seconds = 120

[[operations]]
code = "OP20"
name = "Mill"
group = "MILL"
kind = "machine"
program = "PRG-1"
expected_seconds = 900

[[operations]]
code = "OP40"
name = "Unload"
group = "LOAD"
kind = "unload"
expected_seconds = 90

[[users]]
name = "plc-mill"
roles = ["plc"]
stations = ["M1"]

[[users]]
name = "engineer"
roles = ["engineer"]
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env={} if env is None else env)
    return caught.value.problems


def changed(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def test_base_is_valid() -> None:
    config = parse_config(BASE, env={})
    assert [op.code for op in config.operations] == ["OP10", "OP20", "OP40"]


def test_demo_cell_matches_the_contract() -> None:
    config = load_config(REPO / "config" / "cell.toml", env={})

    assert config.server.security_profile == "demo"
    assert config.anonymous_roles() == ("engineer",)
    assert config.server.endpoint == "opc.tcp://127.0.0.1:4840/cell-gateway/"
    assert config.database.url == f"sqlite+aiosqlite:///{REPO / 'var' / 'cell-gateway.db'}"
    assert config.server.pki_dir == REPO / "var" / "pki"
    assert config.cell.require_approved_templates is False
    assert [(s.id, s.kind) for s in config.stations] == [
        ("L1", "load"),
        ("L2", "load"),
        ("M1", "machine"),
        ("M2", "machine"),
        ("M3", "machine"),
        ("M4", "machine"),
        ("W1", "wash"),
        ("C1", "inspection"),
    ]
    assert config.groups() == {
        "LOAD": ("L1", "L2"),
        "MILL": ("M1", "M2", "M3", "M4"),
        "WASH": ("W1",),
        "CMM": ("C1",),
    }
    assert [(o.code, o.group, o.kind, o.program, o.expected_seconds) for o in config.operations] == [
        ("OP10", "LOAD", "load", "", 120),
        ("OP20", "MILL", "machine", "PRG-MILL-100", 900),
        ("OP30", "WASH", "wash", "PRG-WASH-1", 180),
        ("OP40", "LOAD", "unload", "", 90),
        ("OP50", "CMM", "inspect", "", 300),
    ]
    assert config.pallets == tuple(f"P{n}" for n in range(1, 9))
    assert {u.name: (u.roles, u.stations) for u in config.users} == {
        "plc-load": (("plc",), ("L1", "L2")),
        "plc-mill": (("plc",), ("M1", "M2", "M3", "M4")),
        "plc-wash": (("plc",), ("W1",)),
        "operator": (("operator",), ()),
        "engineer": (("engineer",), ()),
        "erp": (("erp",), ()),
    }


def test_demo_passwords_equal_user_names() -> None:
    from gateway.security.passwords import verify_password

    config = load_config(REPO / "config" / "cell.toml", env={})
    for user in config.users:
        assert verify_password(user.password_hash, user.name), user.name


def test_production_example_allows_no_anonymous_access() -> None:
    config = load_config(REPO / "config" / "production.example.toml", env={})
    demo = load_config(REPO / "config" / "cell.toml", env={})

    assert config.server.security_profile == "production"
    assert config.anonymous_roles() == ()
    assert config.groups() == demo.groups()
    assert config.operations == demo.operations


def test_lookups() -> None:
    config = parse_config(BASE, env={})

    assert config.station("M2").kind == "machine"
    assert config.operation("OP20").program == "PRG-1"
    assert config.group_capacity_hours("MILL") == pytest.approx(2 * 24 * 0.85)
    with pytest.raises(KeyError):
        config.station("M9")
    with pytest.raises(KeyError):
        config.operation("OP99")


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        pytest.param(
            'group = "MILL"',
            'group = "MILLL"',
            "operations[1].group",
            'unknown resource group "MILLL" (known: LOAD, MILL)',
            id="unknown-group",
        ),
        pytest.param(
            'id = "M2"',
            'id = "M1"',
            "stations[2].id",
            'duplicate station id "M1" (first at stations[1])',
            id="duplicate-station",
        ),
        pytest.param(
            'stations = ["M1"]',
            'stations = ["M1", "M9"]',
            "users[0].stations[1]",
            'unknown station "M9"',
            id="user-unknown-station",
        ),
        pytest.param(
            "expected_seconds = 900",
            "expected_seconds = -1",
            "operations[1].expected_seconds",
            "must be >= 0",
            id="negative-expected-time",
        ),
        pytest.param(
            'stations = ["M1"]',
            "",
            "users[0].stations",
            "a user with role plc must list at least one station",
            id="plc-without-stations",
        ),
        pytest.param(
            'name = "engineer"',
            'name = "engineer"\npassword_hash = "s3cret"',
            "users[1].password_hash",
            "password must be hashed: run cell-gateway hash-password",
            id="plaintext-password",
        ),
        pytest.param(
            'name = "T"',
            'name = "T"\n[database]\nurl = "postgresql://gw:pw@db/cell"',
            "database.url",
            "postgresql://gw:***@db/cell is not an async URL: use postgresql+asyncpg://gw:***@db/cell",
            id="sync-db-url",
        ),
        pytest.param(
            'program = "PRG-1"',
            "",
            "operations[1].program",
            "a machine operation needs",
            id="machine-without-program",
        ),
        pytest.param(
            'kind = "unload"',
            'knd = "unload"\nkind = "unload"',
            "operations[2].knd",
            'unknown key "knd" (did you mean "kind"?)',
            id="typo-key",
        ),
        pytest.param(
            'name = "T"',
            'name = "T"\nstale_wip_dayz = 10',
            "cell.stale_wip_dayz",
            'unknown key "stale_wip_dayz" (did you mean "stale_wip_days"?)',
            id="typo-key-in-table",
        ),
        pytest.param(
            '[cell]\nname = "T"',
            '[cell]\nname = "T"\n[servr]\nhttp_port = 1',
            "servr",
            'unknown key "servr" (did you mean "server"?)',
            id="typo-table",
        ),
        pytest.param(
            'id = "M2"\nkind = "machine"',
            'id = "M2"\nkind = "mill"',
            "stations[2].kind",
            "must be one of",
            id="unknown-station-kind",
        ),
        pytest.param(
            'kind = "load"\nexpected_seconds',
            'kind = "machine"\nprogram = "P"\nexpected_seconds',
            "operations[0].kind",
            'the first operation must be "load" or "manual"',
            id="first-operation-not-load",
        ),
        pytest.param(
            'code = "OP40"',
            'code = "OP10"',
            "operations[2].code",
            'duplicate operation code "OP10" (first at operations[0])',
            id="duplicate-operation",
        ),
        pytest.param(
            '"P1", "P2"]',
            '"P1", "P1"]',
            "pallets[1]",
            'duplicate pallet id "P1" (first at pallets[0])',
            id="duplicate-pallet",
        ),
        pytest.param(
            'name = "T"',
            'name = "T"\nserial_format = "{cell}-{serial}"',
            "cell.serial_format",
            "cannot format",
            id="bad-serial-format",
        ),
        pytest.param(
            'name = "T"',
            'name = "T"\nserial_format = "{cell}-X"',
            "cell.serial_format",
            "must contain {seq}",
            id="serial-format-without-seq",
        ),
        pytest.param(
            'name = "T"',
            'name = "T"\nserial_format = "{cell}-{seq:06d}-' + "x" * 60 + '"',
            "cell",
            "makes serials such as",
            id="serial-format-too-long-for-a-serial",
        ),
        pytest.param(
            'name = "T"',
            'name = "T"\n[server]\nendpoint = "http://localhost:4840"',
            "server.endpoint",
            "must start with opc.tcp://",
            id="endpoint-not-opc-tcp",
        ),
        pytest.param(
            'name = "T"',
            'name = "T"\n[server]\nendpoint = "opc.tcp://localhost/cell-gateway/"',
            "server.endpoint",
            "must name a port",
            id="endpoint-without-port",
        ),
        pytest.param(
            'name = "T"',
            'name = "T"\n[capacity]\nefficiency = 1.5',
            "capacity.efficiency",
            "must be <= 1",
            id="efficiency-above-one",
        ),
        pytest.param(
            'roles = ["engineer"]',
            'roles = ["boss"]',
            "users[1].roles[0]",
            "must be one of",
            id="unknown-role",
        ),
    ],
)
def test_broken_config_names_the_key(old: str, new: str, path: str, message: str) -> None:
    problems = problems_of(changed(old, new))

    assert [p.path for p in problems] == [path], problems
    assert message in problems[0].message


def test_problem_messages_never_echo_a_plaintext_password() -> None:
    problems = problems_of(changed('name = "engineer"', 'name = "engineer"\npassword_hash = "hunter2"'))

    assert "hunter2" not in str(ConfigError(problems))


def test_malformed_argon2_hash_is_not_called_plaintext() -> None:
    problems = problems_of(changed('name = "engineer"', 'name = "engineer"\npassword_hash = "$argon2id$x"'))

    assert [p.path for p in problems] == ["users[1].password_hash"]
    assert "not a valid argon2id hash" in problems[0].message


def test_other_async_driver_is_refused_with_the_supported_one() -> None:
    problems = problems_of(changed('name = "T"', 'name = "T"\n[database]\nurl = "sqlite+pysqlite:///x.db"'))

    assert problems == [
        ConfigProblem(
            "database.url", "driver 'pysqlite' is not supported (use aiosqlite): use sqlite+aiosqlite:///x.db"
        )
    ]


def test_top_level_key_after_a_table_gets_a_hint() -> None:
    text = BASE.replace('pallets = ["P1", "P2"]', "") + 'pallets = ["P1"]\n'
    problems = problems_of(text)

    assert [p.path for p in problems] == ["users[1].pallets"]
    assert "must come before the first [table]" in problems[0].message


def test_missing_cell_table_and_no_operations() -> None:
    text = BASE.replace('[cell]\nname = "T"', "")
    text = text[: text.index("[[operations]]")] + text[text.index("[[users]]") :]

    problems = problems_of(text)

    assert {p.path for p in problems} == {"cell", "operations"}


def test_toml_syntax_error_gives_line_and_column() -> None:
    problems = problems_of(changed('name = "T"', "name = "), env={})

    assert len(problems) == 1
    assert problems[0].path == "<string>"
    assert "invalid TOML" in problems[0].message
    assert "line 5" in problems[0].message


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError) as caught:
        load_config(missing, env={})

    expected = ConfigProblem(str(missing), "cannot read config file: No such file or directory")
    assert caught.value.problems == [expected]


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    path = DATA / "several_problems.toml"

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    error = caught.value
    assert error.source == str(path)
    assert [p.path for p in error.problems] == [
        "database.url",
        "stations[2].id",
        "operations[1].expected_seconds",
        "operations[1].group",
        "users[0].password_hash",
        "users[0].stations[0]",
    ]
    lines = str(error).splitlines()
    assert len(lines) == 6
    assert 'operations[1].group: unknown resource group "MILLL" (known: LOAD, MILL)' in lines
    assert "secret" not in str(error)


def test_one_bad_station_does_not_cascade_into_its_references() -> None:
    # M1's kind is wrong, but its id and group are still known to operations and users.
    problems = problems_of(changed('id = "M1"\nkind = "machine"', 'id = "M1"\nkind = "lathe"'))

    assert [p.path for p in problems] == ["stations[1].kind"]


def test_env_overrides_take_effect() -> None:
    env = {
        "CELL_GATEWAY_DATABASE_URL": "postgresql+asyncpg://gw@db/cell",
        "CELL_GATEWAY_ENDPOINT": "opc.tcp://0.0.0.0:4841/x/",
        "CELL_GATEWAY_HTTP_PORT": "0",
    }

    config = parse_config(BASE, env=env)

    assert config.database.url == "postgresql+asyncpg://gw@db/cell"
    assert config.server.endpoint == "opc.tcp://0.0.0.0:4841/x/"
    assert config.server.http_port == 0


def test_env_overrides_replace_file_values_and_ignore_empty_ones() -> None:
    text = changed('name = "T"', 'name = "T"\n[server]\nhttp_port = 9000\nendpoint = "opc.tcp://h:1/"')

    config = parse_config(text, env={"CELL_GATEWAY_HTTP_PORT": "9100", "CELL_GATEWAY_ENDPOINT": ""})

    assert config.server.http_port == 9100
    assert config.server.endpoint == "opc.tcp://h:1/"


def test_bad_env_override_says_where_it_came_from() -> None:
    problems = problems_of(BASE, env={"CELL_GATEWAY_DATABASE_URL": "postgresql://db/cell"})

    assert [p.path for p in problems] == ["database.url"]
    assert problems[0].message.endswith("(from environment variable CELL_GATEWAY_DATABASE_URL)")


def test_load_config_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELL_GATEWAY_HTTP_PORT", "8181")

    config = load_config(REPO / "config" / "cell.toml")

    assert config.server.http_port == 8181


def test_defaults() -> None:
    config = parse_config(BASE, env={})

    assert config.server.security_profile == "production"
    assert config.anonymous_roles() == ()
    assert config.database.url == "sqlite+aiosqlite:///var/cell-gateway.db"
    assert config.server.pki_dir == Path("var/pki")
    assert config.cell.serial_format.format(cell="T", seq=7) == "T-000007"
    assert config.capacity.efficiency == 0.85


def test_config_is_frozen_and_checked_when_built_in_code() -> None:
    config = parse_config(BASE, env={})
    with pytest.raises(ValueError, match="frozen"):
        config.cell.name = "X"  # type: ignore[misc]

    data = config.model_dump()
    data["operations"][1]["group"] = "NOPE"
    with pytest.raises(ValueError, match='unknown resource group "NOPE"'):
        CellConfig.model_validate(data)


_LITERALS = [
    "0",
    "-1",
    "1e400",
    "nan",
    "true",
    '""',
    '"M1"',
    '"LOAD"',
    '"plc"',
    '"x y"',
    "[]",
    '["M1", "M1"]',
    "[1, [2]]",
    '[["LOAD"]]',
    "{}",
    '{ a = "b" }',
    "1979-05-27T07:32:00Z",
]
_VALUE_LINES = [i for i, line in enumerate(BASE.splitlines()) if " = " in line]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_VALUE_LINES), st.sampled_from(_LITERALS)), max_size=4))
def test_any_mistake_is_a_config_error_never_a_crash(edits: list[tuple[int, str]]) -> None:
    lines = BASE.splitlines()
    for index, literal in edits:
        lines[index] = f"{lines[index].split(' = ')[0]} = {literal}"
    problems: list[ConfigProblem] = []
    try:
        parse_config("\n".join(lines), env={})
    except ConfigError as error:
        problems = error.problems
        assert problems
    assert all(p.path and p.message for p in problems)


def _write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cell.toml"
    path.write_text(text)
    return path


def test_relative_paths_in_a_file_are_relative_to_its_folder(tmp_path: Path) -> None:
    text = BASE + ('\n[[users]]\nname = "plc"\nroles = ["plc"]\nstations = ["L1"]\ncertificate = "certs/plc.der"\n')
    text = text.replace("[[stations]]", '[database]\nurl = "sqlite+aiosqlite:///../var/cell.db"\n\n[[stations]]', 1)
    config = load_config(_write(tmp_path / "conf", text), env={})
    assert config.database.url == f"sqlite+aiosqlite:///{tmp_path / 'var' / 'cell.db'}"
    assert config.server.pki_dir == tmp_path / "conf" / "var" / "pki"  # the default, beside the file
    assert config.users[-1].certificate == str(tmp_path / "conf" / "certs" / "plc.der")


def test_absolute_and_non_file_urls_are_kept(tmp_path: Path) -> None:
    for url in ("sqlite+aiosqlite:////srv/cell.db", "sqlite+aiosqlite:///:memory:", "postgresql+asyncpg://gw@db/cell"):
        text = BASE.replace("[[stations]]", f'[database]\nurl = "{url}"\n\n[[stations]]', 1)
        assert load_config(_write(tmp_path, text), env={}).database.url == url


def test_paths_from_the_environment_stay_as_given(tmp_path: Path) -> None:
    env = {"CELL_GATEWAY_DATABASE_URL": "sqlite+aiosqlite:///here/cell.db", "CELL_GATEWAY_PKI_DIR": "here/pki"}
    config = load_config(_write(tmp_path / "conf", BASE), env=env)
    assert config.database.url == "sqlite+aiosqlite:///here/cell.db"
    assert config.server.pki_dir == Path("here/pki")


def test_a_station_nameplate_is_optional_and_read_from_the_file() -> None:
    assert parse_config(BASE, env={}).station("M1").manufacturer == ""  # the control: left out
    nameplate = (
        'id = "M1"\nmanufacturer = "Example Machine Tools"\nmodel = "VMC-500"\nserial_number = "0042"\n'
        'product_instance_uri = "urn:example:vmc-500:0042"'
    )
    m1 = parse_config(changed('id = "M1"', nameplate), env={}).station("M1")
    assert (m1.manufacturer, m1.model, m1.serial_number) == ("Example Machine Tools", "VMC-500", "0042")
    assert m1.product_instance_uri == "urn:example:vmc-500:0042"


@pytest.mark.parametrize(
    ("line", "path", "message"),
    [
        pytest.param('manufacturer = "ACME\\nTools"', "stations[1].manufacturer", "control characters", id="newline"),
        pytest.param('model = "VMC\\u0000"', "stations[1].model", "control characters", id="nul"),
        pytest.param(f'serial_number = "{"9" * 257}"', "stations[1].serial_number", "longer than 256", id="long"),
        pytest.param(
            'product_instance_uri = "example.com/vmc/0042"',
            "stations[1].product_instance_uri",
            "is not a URI: it needs a scheme",
            id="uri-without-scheme",
        ),
    ],
)
def test_a_bad_nameplate_names_the_key(line: str, path: str, message: str) -> None:
    problems = problems_of(changed('id = "M1"', f'id = "M1"\n{line}'))

    assert [p.path for p in problems] == [path], problems
    assert message in problems[0].message
