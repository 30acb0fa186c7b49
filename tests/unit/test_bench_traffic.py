"""The benchmark's count of what the pipeline put through the broker."""

from bench.run import kafka_traffic
from shared.settings import Settings


def test_records_delivered_count_each_topic_once_per_group_that_reads_it():
    settings = Settings(topic_prefix="t1.")
    before = {"t1.beneficiary.registered": 5, "t1.eligibility.decided": 2}  # an earlier run's records
    after = {
        "t1.beneficiary.registered": 105,
        "t1.beneficiary.registered.dlq": 1,
        "t1.eligibility.decided": 112,
        "t1.eligibility.decided.dlq": 0,
        "t1.disbursement.payments": 160,
        "t1.disbursement.payments.dlq": 0,
    }

    traffic = kafka_traffic(settings, before, after)

    assert traffic["published_by_topic"] == {
        "beneficiary.registered": 100,
        "beneficiary.registered.dlq": 1,
        "eligibility.decided": 110,
        "eligibility.decided.dlq": 0,
        "disbursement.payments": 160,
        "disbursement.payments.dlq": 0,
    }
    assert traffic["published"] == 371
    # registrations read by eligibility; decisions by disbursement, reporting and intake;
    # payment statuses by reporting and intake. Dead letters are read by no group.
    assert traffic["delivered"] == 100 + 3 * 110 + 2 * 160
