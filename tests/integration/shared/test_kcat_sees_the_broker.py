"""A third-party Kafka client (Debian's kcat) sees the project's broker and topics."""

import shutil
import subprocess
import time


def test_kcat_lists_the_project_topics_with_their_partition_counts(make_settings):
    assert shutil.which("kcat"), "kcat is installed by `make install` (deploy/install-system-deps.sh)"
    settings = make_settings()
    wanted = [
        f'topic "{settings.topic("beneficiary.registered")}" with 6 partitions',
        f'topic "{settings.topic("disbursement.payments")}" with 6 partitions',
        f'topic "{settings.topic("eligibility.decided.dlq")}" with 1 partitions',
    ]
    for _ in range(20):  # new topics reach the metadata cache within moments
        listing = subprocess.run(
            ["kcat", "-L", "-b", settings.bootstrap_servers],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        if all(line in listing for line in wanted):
            break
        time.sleep(0.5)
    assert f'topic "{settings.topic("beneficiary.registered")}" with 6 partitions' in listing
    assert f'topic "{settings.topic("disbursement.payments")}" with 6 partitions' in listing
    assert f'topic "{settings.topic("eligibility.decided.dlq")}" with 1 partitions' in listing
