# One image for every nixfarm role (coordinator, worker, one-shot commands):
# the entrypoint is the `nixfarm` command. See compose.yaml for a whole farm.
FROM node:20-bookworm

# The tools nixfarm drives: Nix (Debian's nix-bin, single-user, as root),
# the OpenSSH client (Nix copies over ssh), redis-cli for operators, and a
# static busybox for the example in examples/.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      nix-bin openssh-client redis-tools busybox-static \
 && rm -rf /var/lib/apt/lists/*

# Nix inside a container: no build users (Debian creates the nixbld group in
# nix-setup-systemd, which needs systemd) and no sandbox (it needs namespaces
# an unprivileged container does not get). Each container is its own machine
# with its own /nix, so builds in different containers cannot interfere.
RUN printf '%s\n' 'build-users-group =' 'sandbox = false' > /etc/nix/nix.conf

WORKDIR /opt/nixfarm

# Dependencies first, so that a source change does not reinstall them.
COPY package.json package-lock.json tsconfig.base.json tsconfig.json ./
COPY packages/shared/package.json packages/shared/
COPY packages/build/package.json packages/build/
COPY packages/coordinator/package.json packages/coordinator/
COPY packages/worker/package.json packages/worker/
COPY packages/cli/package.json packages/cli/
RUN npm ci --no-audit --no-fund

# The product only (`npm run build` also compiles test/, which an image does not need).
COPY packages packages
RUN npx tsc -b packages/cli \
 && ln -s /opt/nixfarm/packages/cli/bin/nixfarm.js /usr/local/bin/nixfarm

# The example DAG, with the busybox folder it builds with:
#   docker compose exec coordinator nixfarm build examples/default.nix -A all
COPY examples/default.nix examples/
RUN mkdir -p examples/.busybox/bin \
 && cp /bin/busybox examples/.busybox/bin/busybox \
 && ln -s busybox examples/.busybox/bin/sh

ENTRYPOINT ["nixfarm"]
CMD ["--help"]
