# The runner image: QEMU, nothing else. Guests boot in a container from it with no network
# and, when the KVM probe says it works, /dev/kvm as the only device.
ARG BASE
FROM ${BASE}
RUN apt-get update -o Acquire::Retries=5 \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o Acquire::Retries=5 \
      qemu-system-x86 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
