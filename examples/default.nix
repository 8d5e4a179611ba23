# A small software project as a DAG of derivations, for the nixfarm demo.
#
# There is no nixpkgs here: every step is a `builtins.derivation` whose
# builder is a static busybox shell. The busybox comes in as a source
# folder holding bin/busybox and bin/sh -> busybox (busybox picks its applet
# from argv[0]); `npm run demo` creates examples/.busybox from /bin/busybox
# (Debian's busybox-static). To build it by hand:
#
#   mkdir -p examples/.busybox/bin && cp /bin/busybox examples/.busybox/bin/ \
#     && ln -sf busybox examples/.busybox/bin/sh
#   nix-build examples/default.nix -A all                # locally, with Nix
#   nixfarm build examples/default.nix -A all            # on the farm
#
# `salt` goes into every builder script, so a new salt gives derivations that
# no store has seen: the demo passes a fresh one so that everything really
# builds each time.
#
#            source                     (a "fetch"-like step: unpacks sources)
#           /      \
#      libgreet   libmath               (two libraries)
#           \      /    \
#            \    /     manual          (two outputs: out and doc)
#             \  /       /
#             app ------'               (links both libraries, ships the manual)
#              |
#            app-tests                  (runs the app, checks its output)
#              |
#             all                       (a release bundle of everything)
{ busybox ? ./.busybox, salt ? "" }:
let
  bb = builtins.path { path = busybox; name = "busybox"; };

  # One build step: a busybox shell script. Debian's static busybox runs its
  # own applets (ls, grep, ...) without a PATH; `set -e` makes a failing
  # command fail the build, as in stdenv.
  step = { name, script, outputs ? [ "out" ] }: builtins.derivation {
    inherit name outputs salt;
    system = builtins.currentSystem;
    builder = "${bb}/bin/sh";
    args = [ "-c" ''
      set -e
      echo "building ${name} (salt: $salt)"
      ${script}
    '' ];
  };
in
rec {
  source = step {
    name = "hello-source";
    script = ''
      mkdir -p $out/src
      echo 'Hello' > $out/src/greeting.txt
      echo '6 7' > $out/src/numbers.txt
      echo "source unpacked: $(ls $out/src | wc -l) files"
    '';
  };

  libgreet = step {
    name = "libgreet";
    script = ''
      mkdir -p $out/lib
      echo "greet() { echo \"$(cat ${source}/src/greeting.txt), \$1!\"; }" > $out/lib/greet.sh
    '';
  };

  libmath = step {
    name = "libmath";
    script = ''
      mkdir -p $out/lib
      echo 'multiply() { echo $(( $1 * $2 )); }' > $out/lib/math.sh
      echo "numbers: $(cat ${source}/src/numbers.txt)" > $out/lib/numbers
    '';
  };

  # Two outputs, as with nixpkgs' `outputs = [ "out" "doc" ]`: the first one
  # is the default; both must be written, and both come back from the worker.
  manual = step {
    name = "hello-manual";
    outputs = [ "out" "doc" ];
    script = ''
      mkdir -p $out/share/man $doc/share/doc/hello
      echo 'hello(1): greets, and multiplies' > $out/share/man/hello.1
      echo 'See ${libmath}/lib/math.sh for the arithmetic.' > $doc/share/doc/hello/README
    '';
  };

  app = step {
    name = "hello-app";
    script = ''
      mkdir -p $out/bin $out/share
      {
        echo '#!${bb}/bin/sh'
        echo '. ${libgreet}/lib/greet.sh'
        echo '. ${libmath}/lib/math.sh'
        echo 'greet "$1"; echo "6 x 7 = $(multiply 6 7)"'
      } > $out/bin/hello
      chmod +x $out/bin/hello
      ln -s ${manual}/share/man $out/share/man
      ln -s ${manual.doc}/share/doc $out/share/doc
    '';
  };

  app-tests = step {
    name = "hello-app-tests";
    script = ''
      ${app}/bin/hello farm > result
      cat result
      grep -q 'Hello, farm!' result
      grep -q '6 x 7 = 42' result
      mkdir -p $out && cp result $out/test-log
    '';
  };

  all = step {
    name = "hello-release";
    script = ''
      mkdir -p $out
      ln -s ${app} $out/app
      ln -s ${manual.doc} $out/doc
      ln -s ${app-tests} $out/test-results
      echo "release of ${app}" > $out/MANIFEST
    '';
  };
}
