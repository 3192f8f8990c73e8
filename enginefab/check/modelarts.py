"""The ModelArts rules a custom image must follow, each with the page that states it.

Training and model images share the account, file and log rules; a model image also serves HTTP
on 8080 with a health API, keeps its model under /home/mind/model and has a boot command. The
pages differ by region and date (../shared/facts/modelarts.md): where they disagree the rule says
which page it follows. Every failure a check reports ends with `Rule.cite()`.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1000**3


@dataclass(frozen=True)
class Rule:
    says: str
    source: str

    def cite(self) -> str:
        return f"ModelArts: {self.says} ({self.source})"


USER = Rule("the image's user is ma-user, uid 1000, group gid 100 (ma-group; Debian's 'users' is gid 100)",
            "support.huaweicloud.com/intl/ar-mena/devtool-modelarts/devtool-modelarts_03034.html, "
            "support.huaweicloud.com/intl/en-us/usermanual-standard-modelarts/inference-modelarts-0128.html")
HOME = Rule("the boot command runs in /home/ma-user, the user's home",
            "support.huaweicloud.com/intl/en-us/develop-modelarts/develop-modelarts-1416.html")
SETUID = Rule("no file owned by root with setuid or setgid",
              "support.huaweicloud.com/en-us/engineers-modelarts/modelarts_23_0217.html, "
              "docs.otc.t-systems.com/modelarts/umn/custom_images/for_training_models/"
              "specifications_for_custom_images_used_for_training_jobs.html")
LOGS = Rule("logs go to standard output (PYTHONUNBUFFERED=1, so Python's are not held in a buffer)",
            "support.huaweicloud.com/intl/en-us/docker-modelarts/modelarts_23_0219.html")
SIZE_TRAINING = Rule("a training image is at most 9.5 GB (the older OTC training spec; the current Huawei pages "
                     "state no limit)", "docs.otc.t-systems.com/modelarts/umn/custom_images/for_training_models/"
                     "specifications_for_custom_images_used_for_training_jobs.html")
SIZE_MODEL = Rule("a model image is at most 10 GB (intl/en-us, 2023-09-28, the strictest page; eu and OTC say 30 GB, "
                  "ja-jp 50 GB)", "support.huaweicloud.com/intl/en-us/docker-modelarts/modelarts_23_0219.html")
PORT = Rule("a model image serves on port 8080 (\"must be 8080\"), on 0.0.0.0",
            "docs.otc.t-systems.com/modelarts/umn/custom_images/for_importing_models/"
            "specifications_for_custom_images_used_for_importing_models.html")
HEALTH = Rule('a model image answers GET /health with status 200 and {"health": "true"} ("must provide"; newer '
              "Huawei pages: needed for a rolling upgrade without downtime)",
              "docs.otc.t-systems.com/modelarts/umn/custom_images/for_importing_models/"
              "specifications_for_custom_images_used_for_importing_models.html, "
              "support.huaweicloud.com/intl/en-us/docker-modelarts/modelarts_23_0219.html")
COMMAND = Rule("a model image has a boot command (custom engines: CMD sh /home/mind/run.sh)",
               "Huawei Cloud best practice modelarts_04_0230; support.huaweicloud.com/intl/en-us/docker-modelarts/"
               "modelarts_23_0219.html")
MODEL_DIR = Rule("the model package is downloaded to /home/mind/model, readable by ma-user",
                 "Huawei Cloud best practice modelarts_04_0230")
SIGTERM = Rule("a model server stops on SIGTERM (graceful stop for a rolling upgrade)",
               "docs.otc.t-systems.com/modelarts/umn/using_custom_images/using_a_custom_image_to_create_ai_applications/"
               "custom_image_specifications_for_creating_an_ai_application.html")

MODEL_PORT = 8080
#: the uid and gid ModelArts runs every custom image as (ma-user, ma-group)
USER_IDS = (1000, 100)
MA_HOME = "/home/ma-user"
MODEL_HOME = "/home/mind"
MODEL_DIR_PATH = "/home/mind/model"
SIZE_LIMIT = {"training": (int(9.5 * GB), SIZE_TRAINING), "model": (10 * GB, SIZE_MODEL)}


def kind_of(kind: str | None) -> str:
    """A definition's kind; one without (every image before kinds existed) is a training image."""
    return kind or "training"
