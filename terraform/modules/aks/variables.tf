variable "cluster_name" {
  type        = string
  description = "Name of the AKS cluster (also its DNS prefix)."
}

variable "resource_group_name" {
  type        = string
  description = "Existing resource group the cluster and its Log Analytics workspace go in."
}

variable "location" {
  type        = string
  description = "Azure region, e.g. westeurope."
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version, e.g. \"1.35\" (AKS supports 1.35 until March 2027); patches follow the automatic upgrade channel."
  default     = "1.35"
}

variable "vnet_subnet_id" {
  type        = string
  description = "Subnet of the nodes (Azure CNI gives pods addresses from it)."
}

variable "api_server_authorized_ip_ranges" {
  type        = list(string)
  description = "CIDRs allowed to reach the API server (Terraform's and operators' addresses)."

  validation {
    condition     = length(var.api_server_authorized_ip_ranges) > 0
    error_message = "Name at least one CIDR: an empty list would open the API server to the internet."
  }
}

variable "admin_group_object_ids" {
  type        = list(string)
  description = "Entra ID groups given cluster-admin through Azure RBAC, besides the identity that runs Terraform."
  default     = []
}

variable "disk_encryption_set_id" {
  type        = string
  description = "Disk encryption set for customer-managed keys on node disks; null keeps platform-managed keys."
  default     = null
}

variable "system_vm_size" {
  type        = string
  description = "VM size of the system pool (critical add-ons only); must support ephemeral OS disks of os_disk_size_gb."
  default     = "Standard_D4ds_v5"
}

variable "cpu_vm_size" {
  type        = string
  description = "VM size of the CPU user pool; must support ephemeral OS disks of os_disk_size_gb."
  default     = "Standard_D4ds_v5"
}

variable "cpu_min_nodes" {
  type        = number
  description = "Minimum nodes in the CPU pool."
  default     = 1
}

variable "cpu_max_nodes" {
  type        = number
  description = "Maximum nodes in the CPU pool."
  default     = 5
}

variable "gpu_vm_size" {
  type        = string
  description = "VM size of the GPU pool (one NVIDIA GPU), e.g. Standard_NC4as_T4_v3."
  default     = "Standard_NC4as_T4_v3"
}

variable "gpu_max_nodes" {
  type        = number
  description = "Maximum nodes in the GPU pool; it starts at 0 and the AKS cluster autoscaler grows it."
  default     = 3
}

variable "os_disk_size_gb" {
  type        = number
  description = "Ephemeral OS disk size of every node; must fit the VM size's cache or temp disk."
  default     = 100
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every Azure resource the module creates."
  default     = {}
}

variable "rbac_propagation_wait" {
  type        = string
  description = "How long to wait after granting Terraform's identity RBAC Cluster Admin before the kubernetes, helm and kubectl providers use the cluster (Azure RBAC assignments take minutes to propagate; a Go duration, e.g. \"2m\"). If the first apply still gets 403 Forbidden from the API server, run `terraform apply` again."
  default     = "2m"
}
