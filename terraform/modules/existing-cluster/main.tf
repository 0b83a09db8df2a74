# A cluster that already exists (on-premises, kind, k3s, any cloud): everything is read from a
# kubeconfig, so the rest of the stack sees the same outputs as for eks, gke and aks.
locals {
  kubeconfig_text = file(pathexpand(var.kubeconfig_path))
  kubeconfig      = yamldecode(local.kubeconfig_text)
  context_name    = coalesce(var.kubeconfig_context, local.kubeconfig["current-context"])
  context         = one([for c in local.kubeconfig.contexts : c.context if c.name == local.context_name])
  cluster         = one([for c in local.kubeconfig.clusters : c.cluster if c.name == local.context.cluster])
  # The CA is inline (certificate-authority-data), a file (certificate-authority), or absent
  # when the server's certificate is publicly trusted.
  cluster_ca_certificate = try(
    base64decode(local.cluster["certificate-authority-data"]),
    file(pathexpand(local.cluster["certificate-authority"])),
    null,
  )
}
