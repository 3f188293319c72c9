"""Text samples for ner.py's launch plans: `upstream_wf` publishes one as the `TextSample` artifact.

    nimflow run pipelines/text_samples.py      # one new version of TextSample, by hand

`ner.py` imports this module and declares the plans: `upstream_wf` every minute, and `ner_wf`
whenever a new version of `TextSample` appears. They live in their own file so that
`nimflow run pipelines/ner.py` still finds one workflow to run.
"""

import time
from typing import Annotated

from pydantic import BaseModel

import nimflow as nf

SAMPLE_TEXTS = [
    "Dr. Amara Osei joined the Savanna Computing Institute in Nairobi on 3 February 2021 to lead its work on sensors.",
    "On 12 May 2023, Harbor Labs opened a research office in Lisbon, run by Lucas Ferreira.",
    "Maria Okonkwo presented the Northbridge Institute of Technology's new verifier in Oslo in March 2024.",
    "Kestrel Labs and Rhine Valley University signed a research agreement in Cologne on 28 August 2023.",
    "Priya Raman left Seattle in June 2022 to work with Jonas Weber at the Meridian Institute in Dublin.",
]


class TextSample(BaseModel):
    id: str
    text: str


TextSampleArtifact = nf.Artifact("TextSample")


@nf.task
def get_text() -> TextSample:
    """The next sample, taking turns by the minute (a stand-in for a feed of new texts). Not
    cached: every launch should publish what is current."""
    index = int(time.time() // 60) % len(SAMPLE_TEXTS)
    return TextSample(id=f"sample-{index + 1}", text=SAMPLE_TEXTS[index])


@nf.workflow
def upstream_wf() -> Annotated[TextSample, TextSampleArtifact]:
    """Publish a text sample as a new version of the TextSample artifact."""
    return get_text()
