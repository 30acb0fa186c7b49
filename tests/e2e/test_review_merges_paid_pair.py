"""A reviewer finds that two paid people are one: from then on reach counts one person, and the
second payment is reported to finance as an overpayment to recover, never silently."""

from __future__ import annotations

import time

import httpx

from relief_cli.drain import wait_until_drained
from relief_cli.runner import create_partner, fetch_reach, submit_batch
from relief_cli.stack import Stack

HEADER = (
    "partner_ref,given_name,family_name,sex,date_of_birth,nationality,country,id_type,id_number,phone,"
    "household_size,vulnerabilities,consent,assistance,payout_method,payout_account,registered_on\n"
)


def test_a_same_person_review_of_two_paid_people_counts_one_and_reports_the_overpayment(make_settings):
    settings = make_settings()
    stack = Stack(settings)
    stack.start()
    try:
        first = create_partner(settings, "Klang Valley Migrant Support")["api_key"]
        second = create_partner(settings, "Penang Shelter Collective")["api_key"]
        finance = {
            "Authorization": f"Bearer {create_partner(settings, 'Programme finance', role='finance')['api_key']}"
        }
        # One edit apart, same birth date and nationality, different documents: flagged, not merged.
        submit_batch(
            settings,
            first,
            HEADER
            + "K-1,Siti,Rahmawati,F,1990-06-12,IDN,MY,passport,B1234567,,3,job_loss,yes,cash_relief,e_wallet,EW1001,2026-02-01\n",
        )
        assert wait_until_drained(settings, 120, progress=False)["drained"]
        submit_batch(
            settings,
            second,
            HEADER
            + "P-1,Siti,Rahmawaty,F,1990-06-12,IDN,MY,work_permit,W7654321,,4,medical,yes,cash_relief,e_wallet,EW2002,2026-02-03\n",
        )
        assert wait_until_drained(settings, 120, progress=False)["drained"]
        before = fetch_reach(settings)
        assert before["beneficiaries_reached"] == 2
        assert before["disbursed"]["MYR"]["payments"] == 2

        eligibility = settings.service_url("eligibility")
        reviews = httpx.get(f"{eligibility}/v1/reviews", headers=finance, timeout=10).json()["reviews"]
        assert len(reviews) == 1
        answer = httpx.post(
            f"{eligibility}/v1/reviews/{reviews[0]['review_id']}",
            json={"resolution": "same_person", "reason": "same passport photo and employer on both files"},
            headers=finance,
            timeout=10,
        )
        assert answer.status_code == 200, answer.text

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            after = fetch_reach(settings)
            overpayments = httpx.get(
                f"{settings.service_url('disbursement')}/v1/overpayments", headers=finance, timeout=10
            ).json()
            if after["beneficiaries_reached"] == 1 and overpayments:
                break
            time.sleep(0.5)
        assert after["beneficiaries_reached"] == 1
        assert after["people_reached"] == 4  # the larger household of the two rows
        assert after["by_partner"] == {"Klang Valley Migrant Support": 1, "Penang Shelter Collective": 1}
        assert after["disbursed"]["MYR"] == {
            "amount_minor": 56_000 + 64_000,
            "payments": 2,
        }  # the money did go out
        assert len(overpayments) == 1
        assert overpayments[0]["amount_minor"] == 64_000 and overpayments[0]["currency"] == "MYR"
    finally:
        stack.stop()
