variable "cluster_name" {
  type        = string
  description = "Name of the EKS cluster (also the prefix of its node groups and IAM roles)."
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the control plane, e.g. \"1.35\" (standard support on EKS until March 2027; the example's cluster-autoscaler chart matches it)."
  default     = "1.35"
}

variable "region" {
  type        = string
  description = "AWS region the cluster runs in (used in the kubeconfig's `aws eks get-token` call)."
}

variable "vpc_id" {
  type        = string
  description = "VPC the cluster and its nodes live in."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets (at least two availability zones) for the control plane ENIs and the nodes."
}

variable "endpoint_public_access_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to reach the public API endpoint; an empty list makes the endpoint private only."
  default     = []
}

variable "cpu_instance_types" {
  type        = list(string)
  description = "Instance types of the CPU node group."
  default     = ["m6i.xlarge"]
}

variable "cpu_min_nodes" {
  type        = number
  description = "Minimum size of the CPU node group."
  default     = 2
}

variable "cpu_max_nodes" {
  type        = number
  description = "Maximum size of the CPU node group."
  default     = 6
}

variable "gpu_instance_types" {
  type        = list(string)
  description = "Instance types of the GPU node group (one NVIDIA GPU each is what the inference overlay asks for)."
  default     = ["g5.xlarge"]
}

variable "gpu_max_nodes" {
  type        = number
  description = "Maximum size of the GPU node group; it starts at 0 nodes and the cluster autoscaler grows it."
  default     = 4
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every AWS resource the module creates."
  default     = {}
}
