"""Run files: only rank zero writes them and builds their text."""

from types import SimpleNamespace


def test_only_rank_zero_writes_run_files_and_builds_their_text(tmp_path):
    from dg_heads.run_files import write_run_file

    built = []

    def text():
        built.append(1)
        return "{}"

    other = SimpleNamespace(is_global_zero=False, logger=None, default_root_dir=str(tmp_path))
    assert write_run_file(other, "metrics_test.json", text) is None
    assert write_run_file(other, tmp_path / "done", text) is None
    assert not list(tmp_path.iterdir()) and not built
    zero = SimpleNamespace(is_global_zero=True, logger=None, default_root_dir=str(tmp_path / "run"))
    assert write_run_file(zero, "metrics_test.json", text) == tmp_path / "run" / "metrics_test.json"
    assert write_run_file(zero, tmp_path / "done", text) == tmp_path / "done"  # absolute: that file
    assert built == [1, 1] and sorted(p.name for p in tmp_path.rglob("*")) == ["done", "metrics_test.json", "run"]
