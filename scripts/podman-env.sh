# Sourced by the image scripts: podman and buildah with a project-local store (.tubelens/containers, cached between
# runs, nothing in the system's store), runc (crun refuses hybrid cgroups) and no default ulimits (setrlimit is
# refused in this sandbox).
TUBELENS_CONTAINERS="${TUBELENS_CONTAINERS:-$PWD/.tubelens/containers}"
mkdir -p "$TUBELENS_CONTAINERS/root" "$TUBELENS_CONTAINERS/run"
cat > "$TUBELENS_CONTAINERS/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$TUBELENS_CONTAINERS/root"
runroot = "$TUBELENS_CONTAINERS/run"
CONF
cat > "$TUBELENS_CONTAINERS/containers.conf" <<CONF
[containers]
default_ulimits = []
[engine]
runtime = "runc"
CONF
export CONTAINERS_STORAGE_CONF="$TUBELENS_CONTAINERS/storage.conf"
export CONTAINERS_CONF="$TUBELENS_CONTAINERS/containers.conf"
