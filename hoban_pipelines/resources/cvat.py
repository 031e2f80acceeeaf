"""The team's CVAT server, when there is one: where review packages become tasks.

Leave ``host`` empty (the default) and nothing is ever contacted: the packages wait in the lake
for a person to upload. Set it (``CVAT_HOST``, ``CVAT_USERNAME``, ``CVAT_PASSWORD`` in the
deployment's environment) and ``cvat_review_packages`` creates one task per package through
cvat-sdk (``pip install 'hoban_pipelines[cvat]'``).
"""

import dagster as dg


class CvatResource(dg.ConfigurableResource):
    host: str = ""  # e.g. https://cvat.example.com; empty: packages are not uploaded
    username: str = ""
    password: str = ""
    project_id: int = 0  # 0: tasks stand alone, with the labels declared per task

    @property
    def configured(self) -> bool:
        return bool(self.host)

    def client(self):
        """A logged-in cvat-sdk client (a context manager)."""
        from hoban_pipelines.review.packages import connect

        return connect(self.host, self.username, self.password)
