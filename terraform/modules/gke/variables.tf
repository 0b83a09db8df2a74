variable "project_id" {
  type        = string
  description = "Google Cloud project that owns the cluster."
}

variable "location" {
  type        = string
  description = "Region (regional cluster) or zone (zonal cluster) of the cluster, e.g. europe-west4."
}

variable "cluster_name" {
  type        = string
  description = "Name of the GKE cluster."
}

variable "network" {
  type        = string
  description = "VPC network (name or self link) of the cluster."
}

variable "subnetwork" {
  type        = string
  description = "Subnetwork (name or self link) of the nodes; GKE adds the pod and service ranges itself."
}

variable "master_ipv4_cidr_block" {
  type        = string
  description = "A /28 range for the private control plane endpoint, unused elsewhere in the network."
  default     = "172.16.0.0/28"
}

variable "master_authorized_networks" {
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  description = "CIDRs allowed to reach the API server (Terraform's and operators' addresses)."

  validation {
    condition     = length(var.master_authorized_networks) > 0
    error_message = "Name at least one network: an empty list leaves only the private endpoint, which Terraform outside the VPC cannot reach."
  }
}

variable "cpu_machine_type" {
  type        = string
  description = "Machine type of the CPU node pool."
  default     = "e2-standard-4"
}

variable "cpu_min_nodes" {
  type        = number
  description = "Minimum nodes per zone in the CPU node pool."
  default     = 1
}

variable "cpu_max_nodes" {
  type        = number
  description = "Maximum nodes per zone in the CPU node pool."
  default     = 3
}

variable "gpu_machine_type" {
  type        = string
  description = "Machine type of the GPU node pool (must accept the accelerator type)."
  default     = "n1-standard-4"
}

variable "gpu_accelerator_type" {
  type        = string
  description = "GPU model attached to each GPU node, e.g. nvidia-tesla-t4 or nvidia-l4."
  default     = "nvidia-tesla-t4"
}

variable "gpu_max_nodes" {
  type        = number
  description = "Maximum nodes per zone in the GPU node pool; it starts at 0 and GKE's autoscaler grows it."
  default     = 2
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse `terraform destroy` of the cluster while true."
  default     = true
}

variable "labels" {
  type        = map(string)
  description = "Resource labels added to the cluster and its nodes (app = pefm is always there)."
  default     = {}
}

variable "create_cloud_nat" {
  type        = bool
  description = "Create a Cloud Router + Cloud NAT for the network in the cluster's region (all its subnetworks), so the private nodes can pull public images; false when the network already has one there."
  default     = true
}

variable "dns_endpoint" {
  type        = bool
  description = "Open the control plane's DNS-based endpoint to external traffic: callers anywhere authenticate with Google IAM (container.clusters.connect) instead of coming from master_authorized_networks (e.g. GitHub-hosted CD runners, with gcloud container clusters get-credentials --dns-endpoint)."
  default     = false
}
