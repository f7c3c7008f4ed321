"""The systemd unit `p2v scheduler --install` writes."""

from __future__ import annotations

from p2v.jobs.scheduler import unit_text


def test_the_unit_runs_the_scheduler_with_its_options_and_state_directory() -> None:
    text = unit_text(
        ["/opt/p2v/bin/python", "-m", "p2v.cli", "scheduler", "--grace", "60"],
        {"P2V_HOME": "/var/lib/p2v state", "PYTHONPATH": "/opt/p2v"},
        user=False,
    )
    assert "ExecStart=/opt/p2v/bin/python -m p2v.cli scheduler --grace 60\n" in text
    assert 'Environment="P2V_HOME=/var/lib/p2v state"\n' in text
    assert "Environment=PYTHONPATH=/opt/p2v\n" in text
    assert "WantedBy=multi-user.target\n" in text
    # systemd's stop reaches the scheduler alone, which stops its runs resumably.
    assert "KillMode=mixed\n" in text
    assert "WantedBy=default.target\n" in unit_text(["p2v"], {}, user=True)


def test_what_systemd_would_expand_is_escaped() -> None:
    text = unit_text(['/a dir/py"thon', "50%", "$HOME"], {}, user=False)
    assert 'ExecStart="/a dir/py\\"thon" 50%% $$HOME\n' in text
