# Runs in the builder sandbox as an unprivileged user. RUNTIME_PREFIX (/opt/runtimes/openjdk-17) is
# the only writable place that is kept. Download part: apt-get update into private lists in /tmp
# (from the host's sources.list), then `apt-get download` of the two packages; nothing is installed
# on the host. dpkg -x unpacks them; the JDK's links into /etc/java-17-openjdk are replaced by the
# files the package ships, so the runtime needs nothing from the host's /etc.
APT_DIR=/tmp/apt
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" /tmp/debs /tmp/x
APT="-o Dir::State::Lists=$APT_DIR/lists -o Dir::Cache=$APT_DIR/cache -o Debug::NoLocking=1"
# shellcheck disable=SC2086
apt-get -q $APT update
cd /tmp/debs
# shellcheck disable=SC2086
apt-get -q $APT download $RUNTIME_PACKAGES
ls -l /tmp/debs
for deb in /tmp/debs/*.deb; do dpkg -x "$deb" /tmp/x; done
ARCH=$(dpkg --print-architecture)
JDK=/tmp/x/usr/lib/jvm/java-17-openjdk-$ARCH
find "$JDK" -type l | while read -r link; do
    target=$(readlink "$link")
    case "$target" in
        /etc/java-17-openjdk/*)
            rm "$link"
            cp "/tmp/x$target" "$link" ;;
        /*)
            echo "dropping link $link -> $target (outside the runtime)"
            rm "$link" ;;
    esac
done
rm -rf "$JDK/lib/src.zip" "$JDK/man"
mkdir -p "$RUNTIME_PREFIX"
cp -a "$JDK" "$RUNTIME_PREFIX/jdk"
cd /tmp && printf 'public class Main { public static void main(String[] a) { System.out.println("javac ok"); } }\n' > Main.java
"$RUNTIME_PREFIX/jdk/bin/java" Main.java
