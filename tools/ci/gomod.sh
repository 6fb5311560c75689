# Helpers shared by the scripts that build a small Go program of ours from a module whose
# version tools/real/versions.env names (tools/vcsim, tools/olm). Source it; it defines
# functions only. Each function takes the tool's name first, for its messages.

# versions_env_value NAME KEY DEFAULT: KEY's value in versions.env, else DEFAULT.
versions_env_value() {
  local versions="$root/tools/real/versions.env" v=""
  [ -f "$versions" ] && v="$(sed -n "s/^$2=\\([^[:space:]#]*\\).*/\\1/p" "$versions" | tail -n1)"
  if [ -n "$v" ]; then echo "$v"; elif [ -n "$3" ]; then echo "$3"; else
    echo "$1: no $2 in $versions" >&2; return 1
  fi
}

# require_go NAME DIR: installs Go when missing, and refuses a Go older than DIR/go.mod's
# go line (GOTOOLCHAIN=local: no toolchain download).
require_go() {
  if ! command -v go >/dev/null 2>&1; then
    bash "$root/tools/ci/deps.sh" >&2
  fi
  local need have
  need="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$2/go.mod")"
  have="$(go env GOVERSION | sed 's/^go//; s/[^0-9.].*//')"
  if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
    echo "$1: Go $have is older than the $need that $2/go.mod needs; install Go >= $need" >&2
    return 1
  fi
}

# pin_module NAME DIR MODULE VERSION: makes DIR/go.mod require MODULE at VERSION (updating
# go.mod and go.sum, which are then to be committed).
pin_module() {
  local current
  current="$(sed -n "s#^[[:space:]]*$3 \\(v[^[:space:]]*\\).*#\\1#p; s#^require $3 \\(v[^[:space:]]*\\).*#\\1#p" "$2/go.mod" | head -n1)"
  if [ "$current" != "$4" ]; then
    echo "$1: go.mod requires $3 $current, versions.env says $4: updating go.mod and go.sum" >&2
    (cd "$2" && go get "$3@$4" && go mod tidy)
  fi
}

# build_if_stale NAME DIR OUT INPUT...: builds DIR's main package into OUT unless OUT is
# newer than every INPUT (and this file); prints OUT.
build_if_stale() {
  local name="$1" dir="$2" out="$3" f fresh=1
  shift 3
  for f in "$@" "$root/tools/ci/gomod.sh"; do
    [ -x "$out" ] && [ "$out" -nt "$f" ] || fresh=0
  done
  if [ "$fresh" = 0 ]; then
    mkdir -p "$(dirname "$out")"
    echo "$name: building $out" >&2
    local tmp="$out.tmp.$$"
    (cd "$dir" && go build -trimpath -buildvcs=false -ldflags='-s -w' -o "$tmp" .) || { rm -f "$tmp"; return 1; }
    mv -f "$tmp" "$out"
  fi
  echo "$out"
}
