variable "kubeconfig_path" {
  type        = string
  description = "Path of the kubeconfig that reaches the cluster."
  default     = "~/.kube/config"
}

variable "kubeconfig_context" {
  type        = string
  description = "Context to use; null uses the kubeconfig's current-context."
  default     = null
}

variable "managed_database_url" {
  type        = string
  description = "postgresql:// URL of a managed PostgreSQL (any PostgreSQL, TimescaleDB where possible); null runs PostgreSQL + TimescaleDB in the cluster (CloudNativePG)."
  default     = null
  sensitive   = true
}

variable "domain" {
  type        = string
  description = "DNS domain of the Knative routes; null keeps Knative's default."
  default     = null
}

variable "registry_username" {
  type        = string
  description = "Owner of PEFM's private ghcr.io packages; with registry_token an image pull Secret is created in namespace pefm. null: the packages are public."
  default     = null
}

variable "registry_token" {
  type        = string
  description = "Token with read:packages for registry_username (set it with TF_VAR_registry_token, not in a file)."
  default     = null
  sensitive   = true
}

variable "storage_class" {
  type        = string
  description = "StorageClass of the database and Prometheus volumes; null uses the cluster's default StorageClass (the cluster must then have one)."
  default     = null
}

variable "gpu_node_selector" {
  type        = map(string)
  description = "Labels the cluster's GPU nodes carry (NVIDIA GPU feature discovery sets nvidia.com/gpu.present); the `nvidia` RuntimeClass selects them."
  default     = { "nvidia.com/gpu.present" = "true" }
}

variable "gpu_node_taint" {
  type = object({
    key    = string
    value  = string
    effect = string
  })
  description = "Taint the cluster's GPU nodes carry, which the `nvidia` RuntimeClass tolerates."
  default     = { key = "nvidia.com/gpu", value = "present", effect = "NoSchedule" }
}

variable "nvidia_runtime_handler" {
  type        = string
  description = "containerd runtime handler of the GPU nodes behind the `nvidia` RuntimeClass; null: nvidia, as NVIDIA's GPU operator (container toolkit) sets up."
  default     = null
}

variable "install_nvidia_device_plugin" {
  type        = bool
  description = "Install NVIDIA's device plugin (Helm); null: no, as NVIDIA's GPU operator runs its own. Set true on GPU nodes without the operator."
  default     = null
}

variable "deploy_cache" {
  type        = bool
  description = "Whether you apply knative/cache (the shared Valkey cache): false when you skip it, so that no Secret pefm-cache points the functions at a cache that is not there."
  default     = true
}
