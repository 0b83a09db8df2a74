output "knative_version" {
  description = "The Knative release installed (Serving, Kourier, Eventing)."
  value       = local.release
}

output "ingress_service" {
  description = "Kourier's LoadBalancer Service (namespace/name): point the domain's wildcard DNS record at its address."
  value       = "kourier-system/kourier"
}

output "features" {
  description = "The config-features flags set in knative-serving."
  value       = local.features
}

output "gpu_runtime_class" {
  description = "Name of the RuntimeClass GPU revisions use."
  value       = kubectl_manifest.nvidia_runtime_class.name
}

output "flagger_namespace" {
  description = "Namespace of Flagger (its Knative provider moves PEFM's Canary traffic)."
  value       = helm_release.flagger.namespace
}

output "runtime_handler" {
  description = "containerd handler of the `nvidia` RuntimeClass on this platform."
  value       = local.runtime_handler
}
