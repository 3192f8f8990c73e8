"""What `vulture` (min confidence 60, config in pyproject.toml) reports as unused but stays, each
with why. Pydantic validators and hooks and typer commands are ignored by the config itself: their
frameworks call them. Anything not named here that vulture reports is dead: remove it."""

# (a whitelist is read, never run: `_.name` is vulture's spelling of "an attribute called name")

# -- read by tests and benchmarks: the builder's counters (tests/test_build_store.py asserts a
#    second build packs 0 bytes and hits the cache for every layer; bench/build.py reads them)
layers_cached  # assemble/builder.py Stats
layers_pulled  # assemble/builder.py Stats: layers taken from the shared (registry) cache
bytes_packed  # assemble/builder.py Stats
_.bytes_packed

# -- file-like protocol methods that the standard library calls (tarfile, io wrappers)
_.readable  # assemble/debs.py: the ar member stream handed to tarfile
_.writable  # transport/git.py: the hashing writer tarfile writes into

# -- fields of a file format that are part of the format even where no code reads them
schemaVersion  # check/structure.py: container-structure-test's suite header, written into the YAML
schema_  # core/definition.py: the definition's "schema" key (alias), checked by its Literal type
system_python  # engines/model/platforms.py: platforms.toml documents the OS's own Python
cudart  # engines/model/platforms.py: platforms.toml documents a stack's CUDA runtime version
by_digest  # publish/result.py: `enginefab push --json` prints it (a machine-readable contract)

# -- urllib3 hooks: urllib3 reads these class attributes to make our pools and connections
_.pool_classes_by_scheme  # transport/http.py
ConnectionCls  # transport/watchdog.py

# -- the interface tests and tools use (no production caller)
stack_inputs  # lock/locker.py: a stack's inputs as the planner gets them (tests/test_apt_repos.py)
_.from_data  # engines/matrix.py: Matrix.from_data, the matrix of parsed tables (issue 13: tests stop
             # copying trees and monkeypatching the reader)
openat2_available  # core/beneath.py: tests run the openat2 path only where the kernel has it
free_port  # publish/server.py: tests start registries on a free port
add_user  # publish/server.py: tests make an htpasswd registry (tests/conftest.py secure_registry)
self_signed  # publish/server.py: tests make a TLS registry with a self-signed certificate

# -- commands the CLI registers by name (cli/app.py Root.COMMANDS, "module:function", built lazily
#    by cli/lazy.py), and the click.Group methods cli/lazy.py overrides (click calls them)
doctor  # cli/doctor.py
list_  # cli/inspect.py
schema  # cli/inspect.py
init  # cli/project.py
_.list_commands  # cli/lazy.py
_.format_commands  # cli/lazy.py

# -- ModelArts' facts and checks kept beside the ones in use
MODEL_HOME  # check/modelarts.py: ModelArts' model home, written beside MODEL_DIR_PATH (the one the rules read)
serve_cross_check  # check/podman.py: the served model under podman, run by tests/test_model_image.py (no command
                   # calls it yet)

# -- settings and reporting (core/)
Recording  # core/reporter.py: the Reporter tests pass to read what a stage said
VARIABLES  # core/settings.py: the table of every ENGINEFAB_* variable (tests/test_settings.py reads it)

# -- publish and release records
uploaded_blobs  # publish/push.py PushStats: `push --json` stats (read by name into the result)
_.uploaded_blobs
referrer_manifests  # release/plan.py PlannedImage: the referrers' bytes the plan computed
__getattr__  # cli/main.py: the module's lazy attribute hook (PEP 562), Python calls it
