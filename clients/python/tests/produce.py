"""Enqueues one job and prints its id (the suite's producer in Python):

    python3 produce.py URL JOB_TYPE PAYLOAD
"""

import sys

from sluice_client import Producer

with Producer(broker=sys.argv[1]) as producer:
    print(producer.enqueue(sys.argv[2], sys.argv[3].encode()).job_id)
