"""AppArmor and SELinux labels are written where the kernel reads them at execve."""

from capsa.runtime.process import set_exec_labels


def test_apparmor_profile_goes_to_the_apparmor_exec_attribute(tmp_path):
    (tmp_path / "apparmor").mkdir()
    (tmp_path / "apparmor" / "exec").write_text("")
    set_exec_labels({"apparmorProfile": "docker-default"}, str(tmp_path))
    assert (tmp_path / "apparmor" / "exec").read_text() == "exec docker-default"


def test_older_kernels_use_the_shared_exec_attribute(tmp_path):
    (tmp_path / "exec").write_text("")
    set_exec_labels({"apparmorProfile": "p"}, str(tmp_path))
    assert (tmp_path / "exec").read_text() == "exec p"


def test_selinux_label(tmp_path):
    (tmp_path / "exec").write_text("")
    set_exec_labels({"selinuxLabel": "system_u:system_r:container_t:s0"}, str(tmp_path))
    assert (tmp_path / "exec").read_text() == "system_u:system_r:container_t:s0"


def test_nothing_asked_nothing_written(tmp_path):
    set_exec_labels({}, str(tmp_path))
    assert list(tmp_path.iterdir()) == []
