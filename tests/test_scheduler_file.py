"""The scheduler file on its own: what it records and how a reader finds the certificates it names."""

from __future__ import annotations

import json
from pathlib import Path

from hpcbridge import scheduler_file
from hpcbridge.tls import create_certificates


def test_published_paths_are_absolute_and_the_folder_is_recorded(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    made = create_certificates(tmp_path / "jobs" / "42" / "scheduler.tls")
    scheduler_file.publish(Path("jobs/42/scheduler.json"), {"address": "tls://10.0.0.1:1"},
                           {"job_id": "42", "scheduler": "slurm",
                            "tls": {"ca_file": "jobs/42/scheduler.tls/ca.pem", "cert": str(made.cert), "key": str(made.key)}})
    section = json.loads((tmp_path / "jobs/42/scheduler.json").read_text())["hpcbridge"]
    assert section["folder"] == str(tmp_path / "jobs" / "42")
    assert section["tls"] == {"ca_file": str(made.ca_file), "cert": str(made.cert), "key": str(made.key)}


def test_a_copy_reads_the_recorded_certificates_and_another_mount_finds_them_beside_itself(tmp_path) -> None:
    job_folder = tmp_path / "jobs" / "42"
    made = create_certificates(job_folder / "scheduler.tls")
    section = {"job_id": "42", "scheduler": "slurm", "folder": str(job_folder),
               "tls": {"ca_file": str(made.ca_file), "cert": str(made.cert), "key": str(made.key)}}
    text = json.dumps({"address": "tls://10.0.0.1:1", "hpcbridge": section})
    copy = tmp_path / "elsewhere" / "copy.json"
    copy.parent.mkdir()
    copy.write_text(text)
    assert scheduler_file.read(copy).certificates == made  # not elsewhere/scheduler.tls/...
    # The same folder seen under another mount point: the recorded paths lead nowhere here, the file's folder does.
    mounted = tmp_path / "mnt" / "jobs" / "42"
    mounted.mkdir(parents=True)
    (job_folder / "scheduler.tls").rename(mounted / "scheduler.tls")
    (mounted / "scheduler.json").write_text(text)
    found = scheduler_file.read(mounted / "scheduler.json").certificates
    assert found.ca_file == mounted / "scheduler.tls" / "ca.pem" and found.key == mounted / "scheduler.tls" / "key.pem"
    # A file of an earlier version (paths relative to its folder) is read as before.
    old = json.dumps({"address": "tls://10.0.0.1:1", "hpcbridge": {**section, "folder": None, "tls": {
        "ca_file": "scheduler.tls/ca.pem", "cert": "scheduler.tls/cert.pem", "key": "scheduler.tls/key.pem"}}})
    (mounted / "old.json").write_text(old)
    assert scheduler_file.read(mounted / "old.json").certificates.cert == mounted / "scheduler.tls" / "cert.pem"


def test_the_adaptive_program_says_once_that_its_published_files_are_gone(tmp_path, capsys) -> None:
    from hpcbridge.job.adaptive_scheduler import PublishedFiles

    made = create_certificates(tmp_path / "scheduler.tls")
    path = tmp_path / "scheduler.json"
    path.write_text("{}")
    files = PublishedFiles(path, {"ca_file": str(made.ca_file), "cert": str(made.cert), "key": str(made.key)})
    assert files.check(now=0) is None
    made.ca_file.unlink()  # the certificates first, then the file
    path.unlink()
    assert files.check(now=1) is None and files.check(now=10.5) is None  # a shutdown removes it too: a grace
    said = files.check(now=11)
    assert said.startswith(f"hpcbridge: warning: the scheduler file {path} is gone while the job runs"), said
    assert files.check(now=30) is None  # once
    assert capsys.readouterr().err.strip() == said
    # Put back, then a certificate alone removed: said again, naming it.
    path.write_text("{}")
    made.ca_file.write_text("restored")
    assert files.check(now=31) is None
    made.key.unlink()
    assert files.check(now=32) is None
    assert files.check(now=43).startswith(f"hpcbridge: warning: the cluster's certificate {made.key} is gone")
